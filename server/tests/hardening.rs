//! Smaller ways a hostile or careless client or operator could hurt the server, each refused
//! or made harmless: invented methods in metric labels, odd Authorization headers, unprintable
//! token names, out-of-range settings, colour codes in log files, world-readable data.

mod support;

use std::os::unix::fs::PermissionsExt;

use axum::http::StatusCode;
use pycache_proto::api;
use pycache_server::Config;
use serde_json::json;
use support::process::{run, Server};
use support::router::{get, post_json, request, send};
use support::setup;

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let (_dir, state, _) = setup(Config::default()).await;
    for n in 0..300 {
        let req = request(&format!("X{n}"), api::HEALTHZ, None)
            .body(axum::body::Body::empty())
            .unwrap();
        send(&state, req).await;
    }
    let text = String::from_utf8(send(&state, get(api::METRICS, None)).await.body).unwrap();
    assert!(!text.contains("X1"), "an invented method became a label");
    let series = text
        .lines()
        .filter(|l| l.starts_with("pycache_http_requests_total{"))
        .count();
    assert!(series <= 3, "{series} series:\n{text}");
    assert!(text.contains("method=\"other\""), "{text}");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_one_header_only() {
    let (_dir, state, write) = setup(Config::default()).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = request("GET", api::INFO, None)
            .header("authorization", format!("{scheme} {write}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let info: api::ServerInfo = send(&state, req).await.json();
        assert_eq!(info.scope, Some(api::Scope::Write), "{scheme}");
    }
    let req = request("GET", api::INFO, None)
        .header("authorization", format!("Bearer {write}"))
        .header("authorization", "Bearer pyc_someone_else")
        .body(axum::body::Body::empty())
        .unwrap();
    let err = send(&state, req)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(err.message.contains("more than one"), "{}", err.message);
}

#[tokio::test]
async fn token_names_are_short_and_printable() {
    let (_dir, state, _) = setup(Config::default()).await;
    let admin = support::router::token(&state, "admin", api::Scope::Admin).await;
    for bad in ["", "a b", "evil\u{1b}[31m", "-x", &"n".repeat(65)] {
        let answer = send(
            &state,
            post_json(
                api::TOKENS,
                Some(&admin),
                &json!({"name": bad, "scope": "read"}),
            ),
        )
        .await;
        answer.assert_error(StatusCode::BAD_REQUEST, "bad_name");
    }
    let answer = send(
        &state,
        post_json(
            api::TOKENS,
            Some(&admin),
            &json!({"name": "ci@main/x-1.2", "scope": "read"}),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "token",
        "create",
        "--scope",
        "read",
        "--name",
        "bad\u{7}name",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a token name"));
}

#[test]
fn out_of_range_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (flag, value) in [
        ("--body-timeout", "1e20"),
        ("--header-timeout", "1e300"),
        ("--maintenance-interval", "1e-12"),
        ("--idle-timeout", "0.0001"),
        ("--idle-timeout", "NaN"),
    ] {
        let out = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("between"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_data_is_private_and_the_log_file_plain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], dir.path());
    let client = reqwest::blocking::Client::new();
    assert_eq!(
        client.get(server.url("/nothing")).send().unwrap().status(),
        404
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("pycache.db")), 0o600);
    let log = server.log();
    assert!(log.contains("pycache-server ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
}

#[tokio::test]
async fn keys_no_interpreter_makes_are_refused_naming_the_field() {
    use pycache_proto::pack::{encode_pack, Frame};
    use pycache_proto::Entry;
    let (_dir, state, write) = setup(Config::default()).await;
    let entry = Entry::compiled(vec![0xe3, 1, 2, 3], String::new());
    let bad_keys = [
        ("optimization", {
            let mut k = support::key(1);
            k.optimization = 7;
            k
        }),
        ("magic", {
            let mut k = support::key(2);
            k.magic = [0xff, 0xff, 0x0d, 0x0b];
            k
        }),
        ("cache_tag", {
            let mut k = support::key(3);
            k.cache_tag = "cpython-311\u{1b}[2J\0".into();
            k
        }),
        ("settings", {
            let mut k = support::key(4);
            k.settings = "w=x\n".into();
            k
        }),
        ("settings", {
            let mut k = support::key(6);
            k.settings = "s".repeat(pycache_proto::key::MAX_SETTINGS + 1);
            k
        }),
    ];
    let frames: Vec<Frame> = bad_keys
        .iter()
        .map(|(_, k)| Frame::new(k.clone(), &entry))
        .chain([Frame::new(support::key(5), &entry)])
        .collect();
    let answer = send(
        &state,
        support::router::send_pack("POST", api::BATCH_PUT, Some(&write), encode_pack(&frames)),
    )
    .await;
    let outcome: api::BatchPutResponse = answer.json();
    assert_eq!(outcome.stored, vec![support::key(5).digest()]);
    assert_eq!(outcome.refused.len(), bad_keys.len());
    for ((field, key), refused) in bad_keys.iter().zip(&outcome.refused) {
        assert_eq!(refused.key, key.digest());
        assert_eq!(refused.code, api::REFUSED_INVALID);
        assert!(
            refused.reason.contains(field),
            "{field}: {}",
            refused.reason
        );
        assert!(!refused.reason.contains('\u{1b}'), "{}", refused.reason);
    }
    // The single-entry PUT answers 422 naming the field.
    let (_, key) = &bad_keys[0];
    let answer = send(
        &state,
        support::router::send_pack(
            "PUT",
            &api::entry_path(&key.digest()),
            Some(&write),
            encode_pack(&[Frame::new(key.clone(), &entry)]),
        ),
    )
    .await;
    let err = answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_entry");
    assert!(err.message.contains("optimization"), "{}", err.message);
}

/// A real body of the machine's `python3` and its cache tag.
fn real_body() -> (Vec<u8>, String) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import marshal, sys\n\
             code = compile('def f(x):\\n    return [i * x for i in range(3)]\\n', 'm.py', 'exec')\n\
             sys.stdout.buffer.write(sys.implementation.cache_tag.encode() + b'\\n' + marshal.dumps(code))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let split = out.stdout.iter().position(|b| *b == b'\n').unwrap();
    (
        out.stdout[split + 1..].to_vec(),
        String::from_utf8(out.stdout[..split].to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn cpython_bodies_must_be_one_whole_code_object() {
    use pycache_proto::pack::{encode_pack, Frame};
    use pycache_proto::Entry;
    let (_dir, state, write) = setup(Config::default()).await;
    let (body, cache_tag) = real_body();
    let key = |n: u32| {
        let mut k = support::key(n);
        k.cache_tag = cache_tag.clone();
        k
    };
    let mut trailing = body.clone();
    trailing.push(0);
    let bodies = [
        body.clone(),
        b"c\x00".to_vec(),
        body[..body.len() - 3].to_vec(),
        trailing,
        b"\xe9\x00\x00\x00\x00".to_vec(),
    ];
    let frames: Vec<Frame> = bodies
        .iter()
        .enumerate()
        .map(|(n, b)| Frame::new(key(n as u32), &Entry::compiled(b.clone(), String::new())))
        .collect();
    let answer = send(
        &state,
        support::router::send_pack("POST", api::BATCH_PUT, Some(&write), encode_pack(&frames)),
    )
    .await;
    let outcome: api::BatchPutResponse = answer.json();
    assert_eq!(outcome.stored, vec![key(0).digest()], "{outcome:?}");
    assert_eq!(outcome.refused.len(), 4, "{outcome:?}");
    let whole = outcome
        .refused
        .iter()
        .filter(|r| r.reason.contains("not one whole marshalled code object"))
        .count();
    assert_eq!(whole, 3, "c\\0, truncated and trailing bytes: {outcome:?}");
    for refused in &outcome.refused {
        assert_eq!(refused.code, api::REFUSED_INVALID);
        assert!(refused.reason.contains("code object"), "{}", refused.reason);
    }
    // A failed compile has no body to check.
    let failed = Frame::new(
        key(9),
        &Entry::failed("SyntaxError: invalid syntax".into(), String::new()),
    );
    let outcome: api::BatchPutResponse = send(
        &state,
        support::router::send_pack("POST", api::BATCH_PUT, Some(&write), encode_pack(&[failed])),
    )
    .await
    .json();
    assert_eq!(outcome.stored.len(), 1);
}

/// `token list` (or `revoke`, `entries purge`) with no database named finds none and says so,
/// instead of making an empty one in the working directory; `token create` makes a database
/// only where one is named on purpose; `token list` shows times as dates.
#[test]
fn token_commands_never_invent_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = |args: &[&str]| {
        std::process::Command::new(support::process::binary())
            .args(args)
            .current_dir(dir.path())
            .env_remove("PYCACHE_DATA_DIR")
            .env_remove("PYCACHE_DATABASE_URL")
            .output()
            .unwrap()
    };
    for args in [
        &["token", "list"][..],
        &["token", "revoke", "ci"],
        &["entries", "purge", "--written-by", "ci"],
        &["token", "create", "--scope", "read", "--name", "ci"],
    ] {
        let out = server(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no pycache database") && stderr.contains("--data-dir"),
            "{args:?}: {stderr}"
        );
        assert!(
            !dir.path().join("pycache-data").exists(),
            "{args:?} made a database"
        );
    }
    let data = dir.path().join("named");
    let data_arg = data.to_str().unwrap();
    let out = server(&[
        "token",
        "create",
        "--scope",
        "read",
        "--name",
        "ci",
        "--data-dir",
        data_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server(&["token", "list", "--data-dir", data_arg]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let year = chrono::Utc::now().format("%Y-").to_string();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("ci ") && l.contains(&year)),
        "{listing}"
    );
}

/// Issue 23: every subcommand takes its database from the environment, as the server does:
/// `PYCACHE_DATA_DIR` or `PYCACHE_DATABASE_URL` alone (no flag) is the database of `migrate`,
/// `token create|list|revoke`, `entries purge` and `serve` (named or, as the default
/// subcommand, not), and nothing is made in the working directory.
#[test]
fn every_subcommand_takes_its_database_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let data = tmp.path().join("data");
    let url = format!("sqlite://{}", tmp.path().join("by-url.db").display());
    for (var, value, file) in [
        (
            "PYCACHE_DATA_DIR",
            data.to_str().unwrap(),
            data.join("pycache.db"),
        ),
        (
            "PYCACHE_DATABASE_URL",
            url.as_str(),
            tmp.path().join("by-url.db"),
        ),
    ] {
        let command = |args: &[&str]| {
            let mut command = std::process::Command::new(support::process::binary());
            command
                .args(args)
                .current_dir(&cwd)
                .env_remove("PYCACHE_DATA_DIR")
                .env_remove("PYCACHE_DATABASE_URL")
                .env(var, value);
            command
        };
        let ok = |args: &[&str]| {
            let out = command(args).output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{var} {args:?}: {text}");
            text
        };
        ok(&["migrate"]);
        assert!(file.exists(), "{var}: migrate made no {}", file.display());
        let created = ok(&["token", "create", "--scope", "admin", "--name", "ops"]);
        let token = created.lines().last().unwrap().trim().to_owned();
        assert!(token.starts_with("pyc_"), "{created}");
        assert!(ok(&["token", "list"]).contains("ops "), "{var}: token list");
        assert!(
            ok(&["entries", "purge", "--written-by", "ops"]).contains("0 entries"),
            "{var}: entries purge"
        );
        for serve in [
            &["serve", "--listen", "127.0.0.1:0"][..],
            &["--listen", "127.0.0.1:0"],
        ] {
            let mut child = command(serve)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut lines =
                std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
            let addr = lines
                .find_map(|l| l.ok()?.strip_prefix("listening on ").map(str::to_owned))
                .unwrap_or_else(|| panic!("{var} {serve:?}: the server did not start"));
            let info = reqwest::blocking::Client::new()
                .get(format!("http://{}/api/v1/info", addr.trim()))
                .bearer_auth(&token)
                .send()
                .unwrap();
            let status = info.status();
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(status, 200, "{var} {serve:?}: the server knows the token");
        }
        ok(&["token", "revoke", "ops"]);
        assert!(
            ok(&["token", "list"])
                .lines()
                .any(|l| l.starts_with("ops ") && !l.ends_with('-')),
            "{var}: revoked"
        );
        assert!(
            std::fs::read_dir(&cwd).unwrap().next().is_none(),
            "{var}: nothing is made in the working directory"
        );
    }
}
