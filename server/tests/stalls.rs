//! Clients that stop moving: readers that never read their answer and senders that send one
//! byte a second. Neither may hold the slots every other client needs, and a reader that
//! stopped is cut off after the send timeout.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pycache_proto::api::{self, BatchPutResponse};
use pycache_proto::pack::{encode_pack, Frame};
use support::compiled_frame;
use support::proc::stalled_reader;
use support::process::{create_token, Server};

/// A batch put that announces a body and sends it one byte a second, from a thread.
fn slow_sender(server: &Server, token: &str) -> std::thread::JoinHandle<()> {
    let addr = server.base.trim_start_matches("http://").to_owned();
    let token = token.to_owned();
    std::thread::spawn(move || {
        let Ok(mut socket) = TcpStream::connect(&addr) else {
            return;
        };
        let _ = write!(
            socket,
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: {}\r\nContent-Length: 1000000\r\n\r\n",
            api::BATCH_PUT,
            pycache_proto::pack::PACK_CONTENT_TYPE
        );
        for _ in 0..20 {
            if socket.write_all(b"P").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[test]
fn stalled_readers_and_slow_senders_do_not_stop_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let token = create_token(&["--data-dir", data_arg], "ci", "write");
    let server = Server::start(&["--data-dir", data_arg, "--send-timeout", "4"], dir.path());
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // 24 MB of entries: far more than the socket buffers of a reader that does not read.
    let big: Vec<Frame> = (0..48).map(|n| compiled_frame(n, 512 << 10)).collect();
    for chunk in big.chunks(8) {
        let answer = http
            .post(server.url(api::BATCH_PUT))
            .bearer_auth(&token)
            .header("content-type", pycache_proto::pack::PACK_CONTENT_TYPE)
            .body(encode_pack(chunk))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let keys: Vec<String> = big.iter().map(|f| f.key_digest().to_hex()).collect();

    let mut stalled: Vec<TcpStream> = (0..16)
        .map(|_| stalled_reader(&server, &token, &keys))
        .collect();
    let senders: Vec<_> = (0..16).map(|_| slow_sender(&server, &token)).collect();
    std::thread::sleep(Duration::from_millis(1500));

    // Everyone else is served at once.
    let started = Instant::now();
    assert_eq!(
        http.get(server.url(api::HEALTHZ)).send().unwrap().status(),
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let small = compiled_frame(1000, 200);
    let put: BatchPutResponse = http
        .post(server.url(api::BATCH_PUT))
        .bearer_auth(&token)
        .header("content-type", pycache_proto::pack::PACK_CONTENT_TYPE)
        .body(encode_pack(std::slice::from_ref(&small)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(put.stored.len(), 1);
    let got = http
        .post(server.url(api::BATCH_GET))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "keys": [small.key_digest().to_hex(), keys[0]] }))
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    let pack = got.bytes().unwrap();
    assert_eq!(
        pycache_proto::pack::decode_pack(&pack, 1 << 20)
            .unwrap()
            .len(),
        2
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a put and a get took {:?} beside 16 stalled readers and 16 slow senders",
        started.elapsed()
    );

    // The stalled readers are cut off after the send timeout: reading now ends in EOF or a
    // reset once the buffered part is drained, well before 20 s.
    let started = Instant::now();
    for socket in &mut stalled {
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    let received_all = started.elapsed();
    assert!(
        received_all < Duration::from_secs(20),
        "stalled readers kept their connections for {received_all:?}"
    );
    assert!(!server.log().contains("panicked"));
    for s in senders {
        let _ = s.join();
    }
}
