//! Turning a storage library's panic into an error. redb asserts on the pages it reads, so a
//! damaged file can panic inside it; the store reports that as a corrupt file instead of
//! taking the process down (or, at start, printing a panic where an error message belongs).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs [`catch`]: its panics are reported as errors, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Where the last quiet panic happened (the payload does not carry it).
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it becomes `Err` with its message and location. Panics of other
/// threads are printed as before.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info.location().map(ToString::to_string);
                LOCATION.with(|l| *l.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    // The state `f` touches is dropped or rebuilt by the caller after a panic.
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        let at = LOCATION.with(|l| l.borrow_mut().take());
        let message = message(payload.as_ref());
        match at {
            Some(at) => format!("{message} (check at {at})"),
            None => message,
        }
    })
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown failure".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error_with_location() {
        let err = catch(|| -> u32 { panic!("page checksum mismatch") }).expect_err("panics");
        assert!(
            err.starts_with("page checksum mismatch (check at "),
            "{err}"
        );
        assert!(err.contains("catch.rs"), "{err}");
        assert_eq!(catch(|| 7), Ok(7));
    }
}
