//! The pinned socket-LB (cgroup) links, through the bpf(2) syscall: aya 0.14 can neither
//! report a cgroup link's cgroup and attach type nor swap the program of a cgroup link
//! (`attach_to_link` exists for XDP and tc only).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

// `enum bpf_cmd` and `enum bpf_link_type` in linux/bpf.h.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_TYPE_CGROUP: u32 = 3;

/// A pinned cgroup link, opened.
pub struct CgroupLink {
    fd: OwnedFd,
    /// 0 once the cgroup was removed (the link is then defunct).
    pub cgroup_id: u64,
    pub attach_type: u32,
}

/// `bpf_link_info` up to its `cgroup` member; the kernel copies at most this much.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _pad2: u32,
}

/// `bpf(cmd, attr)`; the attr structs below are prefixes of `union bpf_attr`, which the
/// kernel accepts (it zero-fills the rest).
///
/// # Safety
///
/// `T` must be the `#[repr(C)]` layout (or a prefix of it) of `union bpf_attr` for `cmd`,
/// and every address in `attr` must point to memory of the size the kernel reads or
/// writes there for `cmd`, live for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = u32::try_from(size_of::<T>()).expect("small attr");
    // SAFETY: the caller's contract; the kernel reads at most `size` bytes of `attr`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the link pinned at `pin`: `None` if there is no pin; an error if it is not a
/// cgroup link or cannot be read.
pub fn open(pin: &Path) -> io::Result<Option<CgroupLink>> {
    /// The BPF_OBJ_GET attr.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    /// The BPF_OBJ_GET_INFO_BY_FD attr.
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `ObjGet` is the BPF_OBJ_GET attr; `pathname` is a NUL-terminated string
    // (`path`) that lives until the end of the function.
    let fd = match unsafe { bpf(BPF_OBJ_GET, &mut attr) } {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).map_err(io::Error::other)?) };

    let mut info = LinkInfo::default();
    let mut attr = GetInfo {
        bpf_fd: fd.as_raw_fd().cast_unsigned(),
        info_len: u32::try_from(size_of::<LinkInfo>()).expect("small info"),
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: `GetInfo` is the BPF_OBJ_GET_INFO_BY_FD attr; the kernel writes at most
    // `info_len` bytes to `info`, which points to `info` (a live `LinkInfo`).
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    if info.link_type != BPF_LINK_TYPE_CGROUP {
        return Err(io::Error::other(format!(
            "not a cgroup link (bpf_link_type {})",
            info.link_type
        )));
    }
    Ok(Some(CgroupLink {
        fd,
        cgroup_id: info.cgroup_id,
        attach_type: info.attach_type,
    }))
}

impl CgroupLink {
    /// Atomically replaces the link's program (`BPF_LINK_UPDATE`): the cgroup runs
    /// either the old or the new program, never none.
    pub fn update(&self, prog: BorrowedFd<'_>) -> io::Result<()> {
        #[repr(C)]
        struct LinkUpdate {
            link_fd: u32,
            new_prog_fd: u32,
            flags: u32,
            old_prog_fd: u32,
        }
        let mut attr = LinkUpdate {
            link_fd: self.fd.as_raw_fd().cast_unsigned(),
            new_prog_fd: prog.as_raw_fd().cast_unsigned(),
            flags: 0,
            old_prog_fd: 0,
        };
        // SAFETY: `LinkUpdate` is the BPF_LINK_UPDATE attr; it holds no addresses.
        unsafe { bpf(BPF_LINK_UPDATE, &mut attr) }.map(drop)
    }
}
