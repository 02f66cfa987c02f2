//! Tests that switch on the crate's fail points (store errors and panics injected in the auth
//! path, compiled in through the `failpoints` feature). A fail point is global to the process,
//! so these tests live in a binary of their own: in the integration-test binary, one switched
//! on here would also fail the stores of the tests running beside it. Within this binary every
//! test holds a `FailScenario`, which runs them one at a time; that is also why the disk-full
//! test may capture logs with a process-wide subscriber.

#[path = "../it/common/mod.rs"]
mod common;

mod security_failclosed;
mod state_disk_full;
