//! `sessiongate check` refusing rules that are wrong (naming the rule by its index and path),
//! and `sessiongate explain` printing the decision and the rule that made it; both through the
//! binary.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

fn team(rules: &str) -> String {
    team_config("127.0.0.1:3000".parse().unwrap(), "", rules)
}

fn run(args: &[&str], config: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg(args[0])
        .arg("--config")
        .arg(config)
        .args(&args[1..]);
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What `check` printed for a config it refused: one `problem:` finding, the config error
/// (a TOML error quotes the file on indented lines below it).
fn problem(out: &Output) -> String {
    let printed = stdout(out);
    assert!(printed.starts_with("problem: config"), "{printed}");
    assert!(
        printed.lines().skip(1).all(|l| l.starts_with("  ")),
        "{printed}"
    );
    printed
}

#[test]
fn check_refuses_wrong_rules_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let rule =
        |body: &str| format!("[[rules]]\npath = \"/ok\"\ndeny = true\n\n[[rules]]\n{body}\n");
    for (rules, wants) in [
        (
            rule("path = \"/admin\"\nallow = [\"group:admns\"]"),
            &["rules[1].allow[0]", "unknown group \"admns\""][..],
        ),
        (
            rule("path = \"/admin\"\nallow = [\"dave\"]"),
            &["rules[1].allow[0]", "unknown user \"dave\""],
        ),
        (
            rule("path = \"/ok/deeper\"\nallow = [\"bob\"]"),
            &[
                "rules[1]",
                "\"/ok/deeper\" can never match",
                "rules[0] (path \"/ok\")",
            ],
        ),
        (
            rule("path = \"/admin\"\npublic = true\nallow = [\"bob\"]"),
            &[
                "rules[1]",
                "path \"/admin\"",
                "public = true and allow cannot be combined",
            ],
        ),
        (
            rule("path = \"/admin\"\npublic = true\ndeny = true"),
            &["rules[1]", "path \"/admin\"", "only one of"],
        ),
        (
            rule("path = \"/admin\""),
            &["rules[1]", "path \"/admin\"", "needs one of"],
        ),
        (
            rule("path = \"admin\"\ndeny = true"),
            &["rules[1].path", "start with '/'"],
        ),
        (
            rule("path = \"/a/../b\"\ndeny = true"),
            &["rules[1].path", "dot segments"],
        ),
        (
            rule("path = \"//a\"\ndeny = true"),
            &["rules[1].path", "\"//\""],
        ),
        (
            rule("path = \"/a\"\nmethods = [\"get\"]\ndeny = true"),
            &["rules[1].methods[0]", "capitals"],
        ),
        (
            rule("path = \"/a\"\nhost = \"https://x.example\"\ndeny = true"),
            &["rules[1].host", "not a host name"],
        ),
        (
            rule("path = \"/a\"\ndeny = false"),
            &["rules[1].deny", "means nothing"],
        ),
        (
            rule("path = \"/a\"\nallow = []"),
            &["rules[1].allow", "is empty"],
        ),
        (rule("path = \"/a\"\nallows = [\"bob\"]"), &["allows"]),
    ] {
        std::fs::write(&file, team(&rules)).unwrap();
        let out = run(&["check"], &file);
        assert_eq!(out.status.code(), Some(1), "accepted:\n{rules}");
        for want in wants {
            assert!(
                problem(&out).contains(want),
                "{want:?} not in {}",
                stdout(&out)
            );
        }
    }
    // A public path shadowing a later rule is caught too: the deny could never apply.
    let shadowed = team("[[rules]]\npath = \"/static/admin\"\ndeny = true\n").replacen(
        "[auth]\n",
        "[auth]\npublic_paths = [\"/static/\"]\n",
        1,
    );
    std::fs::write(&file, shadowed).unwrap();
    let out = run(&["check"], &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        problem(&out).contains("auth.public_paths[0] (\"/static/\")"),
        "{}",
        stdout(&out)
    );

    for (config, want) in [
        (
            team("").replace("groups = [\"ops\"]", "groups = [\"ops team\"]"),
            "users[2].groups[0]",
        ),
        (
            team("").replace("[auth]\n", "[auth]\ndefault = \"allow\"\n"),
            "auth.default",
        ),
        (
            team("").replace(
                "[upstream]",
                "[upstream]\ngroups_header = \"X_Forwarded_User\"",
            ),
            "upstream.groups_header",
        ),
    ] {
        std::fs::write(&file, config).unwrap();
        let out = run(&["check"], &file);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            problem(&out).contains(want),
            "{want:?} not in {}",
            stdout(&out)
        );
    }

    // The narrower rule first: both can match something.
    let good = "[[rules]]\npath = \"/admin\"\nmethods = [\"GET\"]\nhost = \"other.example\"\ndeny = true\n\n[[rules]]\npath = \"/admin\"\nallow = [\"group:admins\", \"bob\"]\n";
    std::fs::write(&file, team(good)).unwrap();
    let out = run(&["check"], &file);
    assert!(out.status.success(), "{}", stderr(&out));
    for want in ["ok: users: 3\n", "ok: rules: 2 "] {
        assert!(
            stdout(&out).contains(want),
            "{want:?} not in {}",
            stdout(&out)
        );
    }
}

#[test]
fn explain_prints_the_decision_and_the_rule_that_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let hooks = "\n[[rules]]\npath = \"/hooks/\"\nmethods = [\"POST\"]\npublic = true\n";
    let rules = format!("{ADMINS_RULE}{GRAFANA_RULE}{hooks}");
    std::fs::write(
        &file,
        team(&rules).replacen("[auth]\n", "[auth]\npublic_paths = [\"/healthz\"]\n", 1),
    )
    .unwrap();
    for (args, wants) in [
        (
            &[
                "--user",
                "bob",
                "GET",
                "https://app.example.com/admin/users",
            ][..],
            &[
                "GET /admin/users on host app.example.com as bob (no groups)",
                "decision: forbidden: 403",
                "rule: rules[0] (path \"/admin\"): path = \"/admin\", allow = [\"group:admins\"]",
            ][..],
        ),
        (
            &["--user", "alice", "get", "/admin"],
            &[
                "as alice (groups: admins, ops)",
                "decision: allow: forwarded with x-forwarded-user: alice and x-forwarded-groups: admins,ops",
                "rule: rules[0]",
            ],
        ),
        (
            &["GET", "/admin"],
            &[
                "with no session",
                "decision: login required",
                "rule: rules[0]",
            ],
        ),
        (
            &[
                "--user",
                "carol",
                "GET",
                "https://grafana.example.com:3000/d/1",
            ],
            &[
                "on host grafana.example.com",
                "decision: allow",
                "rule: rules[1] (path \"/\")",
                "host = \"grafana.example.com\"",
            ],
        ),
        (
            &["POST", "/hooks/github"],
            &[
                "decision: public: forwarded without a login",
                "rule: rules[2]",
                "methods = [\"POST\"], public = true",
            ],
        ),
        (
            &["GET", "/healthz"],
            &[
                "decision: public",
                "rule: auth.public_paths[0] (\"/healthz\")",
            ],
        ),
        (
            &["--user", "bob", "GET", "/reports"],
            &[
                "decision: allow",
                "rule: none matched; auth.default = \"login\"",
            ],
        ),
        (
            &["--user", "bob", "GET", "/x/..;/admin"],
            &[
                "decision: forbidden",
                "rule: rules[0]",
                "a backend may read this path as /admin",
            ],
        ),
        (
            &["GET", "/x/../admin"],
            &["GET /admin with no session", "decision: login required"],
        ),
        (
            &["GET", "/.sessiongate/login"],
            &["sessiongate's own endpoint"],
        ),
    ] {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        let out = run(&all, &file);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        for want in wants {
            assert!(
                stdout(&out).contains(want),
                "{args:?}: {want:?} not in\n{}",
                stdout(&out)
            );
        }
    }
    for (args, want) in [
        (
            &["--user", "dave", "GET", "/"][..],
            "there is no user \"dave\"",
        ),
        (&["GET", "/a%zz"], "refuses this target with 400"),
        (&["G T", "/"], "is not an HTTP method"),
    ] {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        let out = run(&all, &file);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
