//! Size limits on what clients send, shared by the server (hyper's buffers) and the handler
//! (the exact check).

/// Largest request head (target and headers); larger ones get 431. nginx allows 4 x 8 KiB
/// buffers by default; 64 KiB leaves room for big cookies.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
