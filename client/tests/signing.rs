//! Signed entries end to end, with the real server binary, the real client binary and the real
//! interpreter: `key generate`, a signing writer, readers that pin trusted keys, a server whose
//! database swaps rows, and interpreter processes that must not see the client's secrets.
//!
//! Needs `target/<profile>/pycache-server`, which `cargo test --workspace` builds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pycache_client::remote::ServerClient;
use pycache_client::settings::Secret;
use pycache_proto::pack::{Frame, FrameDigest};
use pycache_proto::signature::{SigningKey, TrustedKey};
use pycache_proto::{Entry, EntryDigest, KeyDigest};
use pycache_testkit::server::Server;

mod support;

use support::project::{
    body_of, compileall_reference, fresh_copy, json, key_of, make_tree, probe, stderr, sync, CLIENT,
};
use support::tree::all_pycs;

/// `key generate NAME --secret-file FILE`: the secret key and the public key it printed.
fn generate_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.secret"));
    let out = Command::new(CLIENT)
        .args(["key", "generate", name, "--secret-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (file, public)
}

#[test]
fn key_generate_writes_a_private_secret_and_prints_a_public_key_that_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, public) = generate_key(tmp.path(), "ci.example.org-1");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the secret key file is its owner's only"
    );
    let secret_text = std::fs::read_to_string(&file).unwrap();
    assert!(
        secret_text.starts_with("ci.example.org-1:"),
        "{secret_text}"
    );
    let secret = SigningKey::parse(secret_text.trim()).expect("the secret key parses");
    let trusted: TrustedKey = public.parse().expect("the public key parses");
    assert_eq!(
        trusted,
        secret.trusted_key(),
        "the public key is the secret's"
    );
    assert_eq!(trusted.name(), "ci.example.org-1");

    // A second run never overwrites the key.
    let again = Command::new(CLIENT)
        .args(["key", "generate", "other", "--secret-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), secret_text);

    // Without a file the secret goes to stdout, the public key to stderr; two keys differ.
    let to_stdout = Command::new(CLIENT)
        .args(["key", "generate", "laptop"])
        .output()
        .unwrap();
    assert_eq!(to_stdout.status.code(), Some(0), "{to_stdout:?}");
    let other = SigningKey::parse(String::from_utf8_lossy(&to_stdout.stdout).trim()).unwrap();
    assert!(stderr(&to_stdout).contains(&other.trusted_key().to_string()));
    assert_ne!(other.trusted_key().to_string()[7..], public[17..]);

    let bad = Command::new(CLIENT)
        .args(["key", "generate", "no spaces"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        stderr(&bad).contains("not a valid key name"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn bad_key_settings_are_clear_errors_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let dir = fresh_copy(base, "tree");
    let cache = base.join("cache");
    let missing = base.join("no-such.secret");
    let out = sync(
        &dir,
        &cache,
        &["--signing-key", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = stderr(&out);
    assert!(
        text.contains("no-such.secret") && text.contains("PYCACHE_SIGNING_KEY_FILE"),
        "{text}"
    );
    let malformed = base.join("bad.secret");
    std::fs::write(&malformed, "ci:bm90IGEga2V5\n").unwrap();
    let out = sync(
        &dir,
        &cache,
        &[],
        &[("PYCACHE_SIGNING_KEY_FILE", malformed.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("bad.secret"), "{}", stderr(&out));
    let out = sync(&dir, &cache, &[], &[("PYCACHE_TRUSTED_KEYS", "ci:bm90")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("PYCACHE_TRUSTED_KEYS"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        dir.join("pyproject.toml"),
        "[tool.pycache]\ntrusted-keys = ['not a key']\n",
    )
    .unwrap();
    let out = sync(&dir, &cache, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("[tool.pycache] trusted-keys"),
        "{}",
        stderr(&out)
    );
}

/// A writer with a signing key uploads signed entries; a reader that trusts the key (from
/// pyproject) uses all of them and writes compileall's bytes.
#[test]
fn a_signing_writers_entries_are_hits_for_a_reader_that_trusts_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let data = base.join("server-data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], base);
    let writer = server.token("write", "ci");
    let reader = server.token("read", "laptop");
    let reference = compileall_reference(base);
    let (secret, public) = generate_key(base, "ci-1");

    let ci = fresh_copy(base, "ci");
    let out = sync(
        &ci,
        &base.join("ci-cache"),
        &["--server", &server.base, "--token", &writer],
        &[("PYCACHE_SIGNING_KEY_FILE", secret.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["uploaded"], 3, "{}", json(&out));

    let dir = fresh_copy(base, "reader");
    // Another key first: rotation keeps several trusted at once.
    let (_, retired) = generate_key(base, "ci-0");
    std::fs::write(
        dir.join("pyproject.toml"),
        format!("[tool.pycache]\ntrusted-keys = [{retired:?}, {public:?}]\n"),
    )
    .unwrap();
    let out = sync(
        &dir,
        &base.join("reader-cache"),
        &["--server", &server.base, "--token", &reader],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = json(&out);
    assert_eq!(summary["remote_hits"], 3, "{summary}");
    assert_eq!(summary["compiled"], 0, "{summary}");
    assert_eq!(summary["untrusted_entries"], 0, "{summary}");
    assert_eq!(all_pycs(&dir), all_pycs(&reference));
}

/// With trusted keys set, an unsigned entry, one signed by a key the reader does not trust and
/// one whose trusted signature was made over another entry are misses: compiled locally, and
/// nothing of them reaches the local cache. Each carries another module's code, so using one
/// would show in the bytes.
#[test]
fn unsigned_untrusted_and_wrongly_signed_entries_are_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let data = base.join("server-data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], base);
    let hostile = server.token("write", "hostile");
    let reader = server.token("read", "laptop");
    let reference = compileall_reference(base);
    let interp = probe(base);
    let pristine = base.join("pristine");
    let trusted = SigningKey::from_seed("ci-1", [7; 32]).unwrap();
    let stranger = SigningKey::from_seed("ci-1", [9; 32]).unwrap();

    let poisoned = |file: &str, body_from: &str| {
        Frame::new(
            key_of(&interp, &pristine, file),
            &Entry::compiled(body_of(&interp, &reference, body_from), String::new()),
        )
    };
    let unsigned = poisoned("src/app.py", "src/lib.py");
    let mut untrusted = poisoned("src/util.py", "src/app.py");
    untrusted
        .signatures
        .push(stranger.sign(&untrusted.key_digest(), &untrusted.entry_digest()));
    let mut wrongly_signed = poisoned("src/lib.py", "src/util.py");
    let honest_lib = Entry::compiled(body_of(&interp, &reference, "src/lib.py"), String::new());
    wrongly_signed.signatures.push(trusted.sign(
        &wrongly_signed.key_digest(),
        &EntryDigest::of(&honest_lib.encode()),
    ));
    let frames = [unsigned, untrusted, wrongly_signed];
    let client =
        ServerClient::new(&server.base, Some(Secret(hostile)), Duration::from_secs(5)).unwrap();
    let (answer, _) = client.batch_put(&frames).unwrap();
    assert_eq!(answer.stored.len(), 3, "{answer:?}");

    let cache = base.join("reader-cache");
    let public = trusted.trusted_key().to_string();
    let dir = fresh_copy(base, "reader");
    let out = sync(
        &dir,
        &cache,
        &[
            "--server",
            &server.base,
            "--token",
            &reader,
            "--trusted-key",
            &public,
        ],
        &[],
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let summary = json(&out);
    assert_eq!(summary["remote_hits"], 0, "{summary}");
    assert_eq!(summary["untrusted_entries"], 3, "{summary}");
    assert_eq!(summary["compiled"], 3, "{summary}");
    assert!(
        text.contains("3 entries") && text.contains(&server.base) && text.contains("trusted"),
        "one warning says how many and names the server: {text}"
    );
    assert_eq!(
        text.matches("not signed by a trusted key").count(),
        1,
        "{text}"
    );
    assert_eq!(all_pycs(&dir), all_pycs(&reference));

    // The same keys from a fresh tree with no server: only what was compiled locally is there.
    let again = fresh_copy(base, "again");
    let out = sync(&again, &cache, &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["local_hits"], 3, "{}", json(&out));
    assert_eq!(all_pycs(&again), all_pycs(&reference));

    // Without trusted keys nothing changes: the unsigned poison is used (which is why readers
    // of a server they do not control pin keys).
    let plain = fresh_copy(base, "plain");
    let out = sync(
        &plain,
        &base.join("plain-cache"),
        &["--server", &server.base, "--token", &reader],
        &[],
    );
    let summary = json(&out);
    assert_eq!(summary["remote_hits"], 3, "{summary}");
    assert_eq!(summary["untrusted_entries"], 0, "{summary}");
}

/// Swaps the bodies (and what else `columns` names) of the rows of `a` and `b` in the server's
/// SQLite database; with `rebind`, writes the frame digest a hostile server would compute for
/// the swapped body, so only signatures can tell.
fn swap_rows(db: &Path, a: &KeyDigest, b: &KeyDigest, columns: &[&str], rebind: bool) {
    let db = rusqlite::Connection::open(db).unwrap();
    let row = |key: &KeyDigest| -> Vec<Option<Vec<u8>>> {
        columns
            .iter()
            .map(|c| {
                db.query_row(
                    &format!("SELECT {c} FROM entries WHERE key_digest = ?1"),
                    [key.0.as_slice()],
                    |r| r.get(0),
                )
                .unwrap()
            })
            .collect()
    };
    let (row_a, row_b) = (row(a), row(b));
    for (key, values) in [(a, &row_b), (b, &row_a)] {
        for (c, value) in columns.iter().zip(values) {
            let n = db
                .execute(
                    &format!("UPDATE entries SET {c} = ?1 WHERE key_digest = ?2"),
                    rusqlite::params![value, key.0.as_slice()],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        if rebind {
            let body: Vec<u8> = db
                .query_row(
                    "SELECT body_digest FROM entries WHERE key_digest = ?1",
                    [key.0.as_slice()],
                    |r| r.get(0),
                )
                .unwrap();
            let digest = FrameDigest::bind(key, &EntryDigest(body.try_into().unwrap()));
            db.execute(
                "UPDATE entries SET frame_digest = ?1 WHERE key_digest = ?2",
                rusqlite::params![digest.0.as_slice(), key.0.as_slice()],
            )
            .unwrap();
        }
    }
}

/// Case 3 of issue 20: the server's database swaps two entries. With trusted keys the client
/// writes nothing wrong, even when the server rebinds the frame digests; without, the frame
/// digest bound to the key still makes the swap a miss.
#[test]
fn a_server_that_swaps_entries_makes_the_client_write_nothing_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let reference = compileall_reference(base);
    let interp = probe(base);
    let pristine = base.join("pristine");
    // What a writer's sync stores: the relocatable key (no dfile) where the interpreter's
    // bytes do not depend on the path.
    let stored_key = |file: &str| {
        let mut key = key_of(&interp, &pristine, file);
        if pycache_proto::key::dfile_leaves_key(
            &interp.implementation,
            (interp.version.0, interp.version.1),
        ) {
            key.dfile = String::new();
        }
        key.digest()
    };
    let (app, util) = (stored_key("src/app.py"), stored_key("src/util.py"));
    let (secret, public) = generate_key(base, "ci-1");

    let cases: [(&str, &[&str], bool, bool); 3] = [
        (
            "swap-all",
            &["body_digest", "frame_digest", "signatures"],
            false,
            true,
        ),
        ("rebound", &["body_digest", "signatures"], true, true),
        ("unsigned", &["body_digest"], false, false),
    ];
    for (name, columns, rebind, trusting) in cases {
        let data = base.join(format!("{name}-data"));
        let mut server = Server::start(&["--data-dir", data.to_str().unwrap()], base);
        let writer = server.token("write", "ci");
        let reader = server.token("read", "laptop");
        let ci = fresh_copy(base, &format!("{name}-ci"));
        let out = sync(
            &ci,
            &base.join(format!("{name}-ci-cache")),
            &["--server", &server.base, "--token", &writer],
            &[("PYCACHE_SIGNING_KEY_FILE", secret.to_str().unwrap())],
        );
        assert_eq!(json(&out)["uploaded"], 3, "{name}: {}", stderr(&out));
        server.kill();
        swap_rows(&data.join("pycache.db"), &app, &util, columns, rebind);
        let server = Server::start(&["--data-dir", data.to_str().unwrap()], base);

        let dir = fresh_copy(base, &format!("{name}-reader"));
        let mut args = vec!["--server", server.base.as_str(), "--token", &reader];
        if trusting {
            args.extend(["--trusted-key", &public]);
        }
        let out = sync(&dir, &base.join(format!("{name}-cache")), &args, &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let summary = json(&out);
        assert_eq!(
            summary["remote_hits"], 1,
            "{name}: only lib is used: {summary}"
        );
        assert_eq!(summary["compiled"], 2, "{name}: {summary}");
        let refused = summary["untrusted_entries"].as_u64().unwrap()
            + summary["corrupt_entries"].as_u64().unwrap();
        assert_eq!(refused, 2, "{name}: {summary}");
        if rebind {
            assert_eq!(summary["untrusted_entries"], 2, "{name}: {summary}");
        }
        assert_eq!(all_pycs(&dir), all_pycs(&reference), "{name}");
        let import = Command::new("python3")
            .current_dir(dir.join("src"))
            .args(["-c", "import app, util; print(app.NAME, util.twice(2))"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&import.stdout), "app 4\n", "{name}");
    }
}

/// The interpreter processes the client starts (probe, workers) do not see the client's token
/// or signing key file: a `sitecustomize` on PYTHONPATH — any dependency's code could do the
/// same — records what it can read.
#[test]
fn interpreter_processes_do_not_see_the_clients_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    make_tree(&base.join("pristine"));
    let (secret, _) = generate_key(base, "ci-1");
    let site = base.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let seen = base.join("seen.txt");
    std::fs::write(
        site.join("sitecustomize.py"),
        format!(
            "import os\nwith open({:?}, 'a') as f:\n    f.write('%r %r\\n' % (os.environ.get('PYCACHE_TOKEN'), os.environ.get('PYCACHE_SIGNING_KEY_FILE')))\n",
            seen.to_str().unwrap()
        ),
    )
    .unwrap();
    let dir = fresh_copy(base, "tree");
    let out = sync(
        &dir,
        &base.join("cache"),
        &[],
        &[
            ("PYCACHE_TOKEN", "secret-token-123"),
            ("PYCACHE_SIGNING_KEY_FILE", secret.to_str().unwrap()),
            ("PYTHONPATH", site.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(json(&out)["compiled"].as_u64().unwrap() > 0);
    let lines = std::fs::read_to_string(&seen).expect("the interpreter ran sitecustomize");
    assert!(!lines.is_empty());
    for line in lines.lines() {
        assert_eq!(line, "None None", "{lines}");
    }
}
