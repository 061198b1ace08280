#![no_std]
// Library target so the workspace can depend on the crate; the programs are in main.rs.
