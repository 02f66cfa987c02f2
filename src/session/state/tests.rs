//! The durable store without a socket: what a reopened directory holds after creates, ends,
//! a move from the read-back map, a damaged tail and pending sign-ins.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::*;
use crate::session::browser::Browser;

const META: SessionMeta = SessionMeta {
    client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    browser: Browser::UNKNOWN,
};

fn temp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sessiongate-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A store on `path` as a fresh process would open it, with its own table of names.
fn open(path: &Path) -> (DurableStore, Arc<UserNames>) {
    let names = Arc::new(UserNames::default());
    let opening = Opening {
        live: Arc::new(MemoryStore::new(
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )),
        keys: SessionKeys::new(b"unit-test-secret-0123456789abcdef"),
        names: names.clone(),
        idle: Duration::from_secs(3600),
        absolute: Duration::from_secs(7200),
        touch_interval: Duration::from_secs(60),
        sweep_interval: Duration::from_secs(60),
        write_errors: Counter::default(),
        degraded: Gauge::default(),
    };
    let dir = StateDir::open(path).expect("the directory opens");
    (
        DurableStore::open(dir, opening).expect("the store opens"),
        names,
    )
}

/// Closes `store` and waits until its directory's lock is free again.
fn close(store: DurableStore) {
    store.close();
    drop(store);
}

fn owner(names: &UserNames, name: &str) -> Owner {
    Owner {
        user: names.intern(name),
        credentials: 7,
    }
}

/// Opens `path` again, retrying while the last holder's threads let go of the lock.
fn reopen(path: &Path) -> (DurableStore, Arc<UserNames>) {
    drop(dir_when_free(path));
    open(path)
}

/// The state directory at `path`, once the last store's writer thread has let go of its lock
/// (it does so just after `close`, on its own time).
fn dir_when_free(path: &Path) -> StateDir {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match StateDir::open(path) {
            Ok(dir) => return dir,
            Err(StateError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn sessions_come_back_under_their_ids_and_ended_ones_do_not() {
    let path = temp("back");
    let (store, names) = open(&path);
    let kept = store
        .create(owner(&names, "alice"), "alice", None, &META)
        .unwrap();
    let ended = store
        .create(owner(&names, "bob"), "bob", None, &META)
        .unwrap();
    assert!(store.remove(&ended).await.unwrap());
    close(store);

    let (store, names) = reopen(&path);
    assert_eq!(store.len(), 1);
    let alice = store.touch(&kept).unwrap().expect("kept");
    assert_eq!(names.name(alice.user).as_deref(), Some("alice"));
    assert_eq!(alice.credentials, 7);
    assert!(store.touch(&ended).unwrap().is_none());
    assert_eq!(store.live().len(), 1, "moved under its id on first use");
    let listed = store.of_user(alice.user);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, store.key_of(&kept));
    assert_eq!(listed[0].2.client, META.client);
    close(store);
    std::fs::remove_dir_all(&path).unwrap();
}

#[tokio::test]
async fn ending_a_users_sessions_reaches_the_read_back_ones() {
    let path = temp("end-user");
    let (store, names) = open(&path);
    let a = store
        .create(owner(&names, "alice"), "alice", None, &META)
        .unwrap();
    let b = store
        .create(owner(&names, "alice"), "alice", None, &META)
        .unwrap();
    let c = store
        .create(owner(&names, "carol"), "carol", None, &META)
        .unwrap();
    close(store);

    let (store, names) = reopen(&path);
    store.touch(&a).unwrap().expect("a is back");
    let alice = names.get("alice").unwrap();
    assert_eq!(store.end_where(|o| o.user == alice).await, 2);
    close(store);

    let (store, _) = reopen(&path);
    assert!(store.touch(&a).unwrap().is_none());
    assert!(store.touch(&b).unwrap().is_none());
    assert!(store.touch(&c).unwrap().is_some());
    close(store);
    std::fs::remove_dir_all(&path).unwrap();
}

#[tokio::test]
async fn a_torn_tail_loses_only_the_last_record() {
    let path = temp("torn");
    let (store, names) = open(&path);
    let first = store
        .create(owner(&names, "alice"), "alice", None, &META)
        .unwrap();
    let second = store
        .create(owner(&names, "alice"), "alice", None, &META)
        .unwrap();
    close(store);
    let dir = dir_when_free(&path);
    let log = dir.log(*dir.logs().unwrap().last().unwrap());
    drop(dir);
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 5).unwrap();

    let (store, _) = reopen(&path);
    assert!(store.touch(&first).unwrap().is_some());
    assert!(store.touch(&second).unwrap().is_none());
    close(store);
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn pending_sign_ins_and_used_codes_come_back_until_they_end() {
    let path = temp("pending");
    let (store, _) = open(&path);
    let id = SessionId::generate();
    let later = load::ms_of(SystemTime::now() + Duration::from_secs(120));
    let pending = PendingRecord {
        user: "alice".into(),
        credentials: 3,
        rd: "/after".into(),
        wrong: 1,
        expires_ms: later,
    };
    store.pending_put(&id, pending.clone());
    let gone = SessionId::generate();
    store.pending_put(&gone, pending.clone());
    store.pending_end(&gone);
    store.code_used("alice", 42, SystemTime::now() + Duration::from_secs(90));
    close(store);

    let (store, _) = reopen(&path);
    assert_eq!(store.pending_get(&id), Some(pending));
    assert_eq!(store.pending_get(&gone), None);
    let codes = store.used_codes();
    assert_eq!(codes.len(), 1);
    assert_eq!((codes[0].user.as_str(), codes[0].step), ("alice", 42));
    close(store);
    std::fs::remove_dir_all(&path).unwrap();
}

#[tokio::test]
async fn a_clean_close_writes_when_sessions_were_last_used() {
    let path = temp("touch");
    let (store, names) = open(&path);
    let id = store
        .create(owner(&names, "alice"), "alice", None, &META)
        .unwrap();
    let alice = names.get("alice").unwrap();
    let created = store.of_user(alice)[0].2.started;
    // Times are whole milliseconds: make the use later than the start.
    std::thread::sleep(Duration::from_millis(5));
    store.touch(&id).unwrap().expect("live");
    let used = store.of_user(alice)[0].2.last_seen;
    assert!(used > created);
    close(store);

    let (store, names) = reopen(&path);
    let listed = store.of_user(names.get("alice").unwrap());
    assert_eq!(listed.len(), 1);
    // Each store keeps whole milliseconds from its own zero: equal to within 2 ms.
    let back = listed[0].2.last_seen;
    let apart = back.duration_since(used).unwrap_or_else(|e| e.duration());
    assert!(
        apart < Duration::from_millis(2),
        "the last use, not the start: {back:?} vs {used:?}"
    );
    close(store);
    std::fs::remove_dir_all(&path).unwrap();
}

fn entry(version: u32) -> UserEntry {
    UserEntry {
        handle: [7; 16],
        json: format!("{{\"version\":{version}}}"),
    }
}

/// The holder adds users u1, u2, ... in order and replaces its logs with a snapshot after
/// each: a reader without the lock finds logs gone between listing and opening them, or
/// read before a snapshot that covers them, and still gets every user, u1 to some uN.
#[tokio::test]
async fn users_data_reads_whole_without_the_lock_while_the_holder_compacts() {
    let path = temp("unlocked");
    let (store, _) = open(&path);
    store
        .change_user_data("bob", |_| (Some(entry(0)), ()))
        .await;
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 1..=300 {
                let user = format!("u{n}");
                let (record, ()) = store.change_in_memory(&user, |_| (Some(entry(n)), ()));
                store.append(&[record.expect("a change")]);
                keeper::compact(&store.inner);
            }
        })
    };
    let unlocked = StateDir::unlocked(&path).unwrap();
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        reads += 1;
        let read = load::load_unlocked(&unlocked).unwrap().user_data;
        assert_eq!(read.get("bob"), Some(&entry(0)));
        let added = read.len() - 1;
        assert!(
            (1..=added).all(|n| read.contains_key(&format!("u{n}"))),
            "a gap in {added} users read"
        );
    }
    writer.join().unwrap();
    assert!(store.forget_user_data("bob"));
    assert!(!store.forget_user_data("bob"), "gone already");
    store.synced().await;
    let read = load::load_unlocked(&unlocked).unwrap().user_data;
    assert_eq!((read.len(), read.get("bob")), (300, None));
    close(store);
    std::fs::remove_dir_all(&path).unwrap();
}
