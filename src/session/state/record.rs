//! The records of the state files and how they are framed.
//!
//! A file is the magic [`MAGIC`], then frames: the payload's length (u32), its CRC-32 (u32),
//! and the payload, little-endian throughout. A payload is one record: a kind byte and its
//! fields. Reading stops at the first frame that is cut short or whose checksum is wrong, so
//! a write torn by a crash or a flipped bit costs the records from there on, never a wrong
//! one.
//!
//! No record holds a session id or a cookie value: sessions are named by their keyed hash
//! (`SessionKeys::of`), as in Redis.

use crate::session::keys::SessionKey;

/// The first bytes of every state file (and its format version).
pub const MAGIC: &[u8; 8] = b"SGSTATE1";

/// A payload longer than this is taken for a corrupt length.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// A session's times and origin, times in Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub created_ms: u64,
    pub last_seen_ms: u64,
    /// IPv4 as IPv4-mapped IPv6.
    pub client: [u8; 16],
    pub browser: [u8; 2],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A session of `user` (a configured name, or a provider user's key).
    Create {
        key: SessionKey,
        user: String,
        credentials: u32,
        started: Started,
    },
    /// A session was used at `last_seen_ms`.
    Touch { key: SessionKey, last_seen_ms: u64 },
    /// A session ended.
    End { key: SessionKey },
    /// A provider user's profile (JSON of `identity::Profile`), under their key.
    Profile { user: String, json: String },
    /// A user's TOTP code of time step `step` was used; remembered until `until_ms`.
    TotpUsed {
        user: String,
        step: u64,
        until_ms: u64,
    },
    /// A pending sign-in (password right, code awaited), whole, under its keyed hash.
    Pending {
        key: SessionKey,
        pending: PendingRecord,
    },
    /// A pending sign-in ended.
    PendingEnd { key: SessionKey },
    /// A local user's own data (their passkeys): their handle and the whole document, which
    /// replaces what was kept before.
    UserData {
        user: String,
        handle: [u8; 16],
        json: String,
    },
    /// A user's own data was deleted (the user was removed, or removed everything).
    UserDataEnd { user: String },
}

/// One user's own data (see `session::user_data`): their handle and the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    pub handle: [u8; 16],
    pub json: String,
}

/// A pending sign-in as the disk keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecord {
    pub user: String,
    pub credentials: u32,
    /// Where to go once signed in.
    pub rd: String,
    pub wrong: u32,
    pub expires_ms: u64,
}

const CREATE: u8 = 1;
const TOUCH: u8 = 2;
const END: u8 = 3;
const PROFILE: u8 = 4;
const TOTP_USED: u8 = 5;
const PENDING: u8 = 6;
const PENDING_END: u8 = 7;
const USER_DATA: u8 = 8;
const USER_DATA_END: u8 = 9;

impl Record {
    /// Appends this record's frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        match self {
            Record::Create {
                key,
                user,
                credentials,
                started,
            } => {
                out.push(CREATE);
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(&started.created_ms.to_le_bytes());
                out.extend_from_slice(&started.last_seen_ms.to_le_bytes());
                out.extend_from_slice(&started.client);
                out.extend_from_slice(&started.browser);
                out.extend_from_slice(&credentials.to_le_bytes());
                put_str(out, user);
            }
            Record::Touch { key, last_seen_ms } => {
                out.push(TOUCH);
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(&last_seen_ms.to_le_bytes());
            }
            Record::End { key } => {
                out.push(END);
                out.extend_from_slice(key.as_bytes());
            }
            Record::Profile { user, json } => {
                out.push(PROFILE);
                put_str(out, user);
                put_str(out, json);
            }
            Record::TotpUsed {
                user,
                step,
                until_ms,
            } => {
                out.push(TOTP_USED);
                out.extend_from_slice(&step.to_le_bytes());
                out.extend_from_slice(&until_ms.to_le_bytes());
                put_str(out, user);
            }
            Record::Pending { key, pending } => {
                out.push(PENDING);
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(&pending.credentials.to_le_bytes());
                out.extend_from_slice(&pending.wrong.to_le_bytes());
                out.extend_from_slice(&pending.expires_ms.to_le_bytes());
                put_str(out, &pending.user);
                put_str(out, &pending.rd);
            }
            Record::PendingEnd { key } => {
                out.push(PENDING_END);
                out.extend_from_slice(key.as_bytes());
            }
            Record::UserData { user, handle, json } => {
                out.push(USER_DATA);
                out.extend_from_slice(handle);
                put_str(out, user);
                put_str(out, json);
            }
            Record::UserDataEnd { user } => {
                out.push(USER_DATA_END);
                put_str(out, user);
            }
        }
        let payload = &out[start + 8..];
        let len = u32::try_from(payload.len()).expect("records are small");
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// The record in `payload` (a frame's checked contents); `None` if it is not one.
    pub fn decode(payload: &[u8]) -> Option<Record> {
        let (&kind, rest) = payload.split_first()?;
        let mut r = Reader(rest);
        let record = match kind {
            CREATE => {
                let key = r.key()?;
                let created_ms = r.u64()?;
                let last_seen_ms = r.u64()?;
                let client = r.array::<16>()?;
                let browser = r.array::<2>()?;
                let credentials = r.u32()?;
                Record::Create {
                    key,
                    user: r.str()?,
                    credentials,
                    started: Started {
                        created_ms,
                        last_seen_ms,
                        client,
                        browser,
                    },
                }
            }
            TOUCH => Record::Touch {
                key: r.key()?,
                last_seen_ms: r.u64()?,
            },
            END => Record::End { key: r.key()? },
            PROFILE => Record::Profile {
                user: r.str()?,
                json: r.str()?,
            },
            TOTP_USED => {
                let step = r.u64()?;
                let until_ms = r.u64()?;
                Record::TotpUsed {
                    user: r.str()?,
                    step,
                    until_ms,
                }
            }
            PENDING => {
                let key = r.key()?;
                let credentials = r.u32()?;
                let wrong = r.u32()?;
                let expires_ms = r.u64()?;
                Record::Pending {
                    key,
                    pending: PendingRecord {
                        user: r.str()?,
                        rd: r.str()?,
                        credentials,
                        wrong,
                        expires_ms,
                    },
                }
            }
            PENDING_END => Record::PendingEnd { key: r.key()? },
            USER_DATA => {
                let handle = r.array::<16>()?;
                Record::UserData {
                    handle,
                    user: r.str()?,
                    json: r.str()?,
                }
            }
            USER_DATA_END => Record::UserDataEnd { user: r.str()? },
            _ => return None,
        };
        r.0.is_empty().then_some(record)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).expect("names and profiles are small");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn key(&mut self) -> Option<SessionKey> {
        self.array().map(SessionKey::from_bytes)
    }

    fn str(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }
}

/// What reading frames from a file's bytes found.
pub struct Frames<'a> {
    rest: &'a [u8],
    /// Where the next frame starts, from the start of the frames.
    pub offset: usize,
}

/// Why reading a file's frames stopped before its end.
#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    /// The last frame is cut short: a write torn by a crash.
    Torn,
    /// A frame's checksum or contents are wrong.
    Corrupt,
}

impl<'a> Frames<'a> {
    /// The frames of `bytes` (a file's contents after [`MAGIC`]).
    pub fn new(bytes: &'a [u8]) -> Frames<'a> {
        Frames {
            rest: bytes,
            offset: 0,
        }
    }

    /// The next record; `Ok(None)` at a clean end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, Damage> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let Some((header, body)) = self.rest.split_first_chunk::<8>() else {
            return Err(Damage::Torn);
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_PAYLOAD {
            return Err(Damage::Corrupt);
        }
        if len > body.len() {
            return Err(Damage::Torn);
        }
        let payload = &body[..len];
        if crc32fast::hash(payload) != crc {
            return Err(Damage::Corrupt);
        }
        let record = Record::decode(payload).ok_or(Damage::Corrupt)?;
        self.rest = &body[len..];
        self.offset += 8 + len;
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let key = SessionKey::from_bytes([7; 32]);
        vec![
            Record::Create {
                key,
                user: "alice".into(),
                credentials: 0xdead_beef,
                started: Started {
                    created_ms: 1_700_000_000_000,
                    last_seen_ms: 1_700_000_100_000,
                    client: [1; 16],
                    browser: [2, 3],
                },
            },
            Record::Touch {
                key,
                last_seen_ms: 42,
            },
            Record::End { key },
            Record::Profile {
                user: "corp\u{1f}sub".into(),
                json: "{}".into(),
            },
            Record::TotpUsed {
                user: "bob".into(),
                step: 9,
                until_ms: 10,
            },
            Record::Pending {
                key,
                pending: PendingRecord {
                    user: "carol".into(),
                    credentials: 5,
                    rd: "/reports?q=1".into(),
                    wrong: 2,
                    expires_ms: 99,
                },
            },
            Record::PendingEnd { key },
            Record::UserData {
                user: "alice".into(),
                handle: [7; 16],
                json: "{\"passkeys\":[]}".into(),
            },
            Record::UserDataEnd {
                user: "alice".into(),
            },
        ]
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let mut bytes = Vec::new();
        for r in samples() {
            r.encode(&mut bytes);
        }
        let mut frames = Frames::new(&bytes);
        for want in samples() {
            assert_eq!(frames.next_record(), Ok(Some(want)));
        }
        assert_eq!(frames.next_record(), Ok(None));
        assert_eq!(frames.offset, bytes.len());
    }

    #[test]
    fn a_torn_or_flipped_frame_stops_the_reading_there() {
        let mut bytes = Vec::new();
        for r in samples() {
            r.encode(&mut bytes);
        }
        let mut first = Vec::new();
        samples()[0].encode(&mut first);
        for cut in 1..bytes.len() - first.len() {
            let mut frames = Frames::new(&bytes[..first.len() + cut]);
            assert!(matches!(frames.next_record(), Ok(Some(_))));
            let mut read = 1;
            let end = loop {
                match frames.next_record() {
                    Ok(Some(_)) => read += 1,
                    other => break other,
                }
            };
            if first.len() + cut == bytes.len() {
                assert_eq!(end, Ok(None));
            } else if end != Ok(None) {
                assert_eq!(end, Err(Damage::Torn), "cut at {cut}");
            }
            assert!(read <= samples().len());
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            let mut frames = Frames::new(&flipped);
            let mut good = 0;
            while let Ok(Some(r)) = frames.next_record() {
                assert_eq!(r, samples()[good], "byte {at} flipped");
                good += 1;
            }
            assert!(good < samples().len(), "byte {at} flipped went unnoticed");
        }
    }
}
