//! Task artifacts against a real dev agent and a local HTTP server the
//! test starts: a tarball unpacked with its checksum checked, a plain file
//! fetched with a request header, and a wrong checksum that fails the task
//! with an event naming the URL.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{job_file, wait_for, Agent};
use sha2::Digest;

/// Serves `files` on 127.0.0.1 (one thread per connection); `/private.txt`
/// needs `X-Token: s3cret`. Returns the base URL.
fn serve(files: BTreeMap<&'static str, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut token = false;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    token |= h.to_ascii_lowercase().trim() == "x-token: s3cret";
                }
                let (status, body) = match files.get(path.as_str()) {
                    Some(_) if path == "/private.txt" && !token => ("403 Forbidden", b"no token".to_vec()),
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let _ =
                    write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
            });
        }
    });
    base
}

/// A gzipped tarball of `entries`.
fn tarball(entries: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, text) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn job(id: &str, base: &str, checksum: &str) -> String {
    format!(
        r#"job "{id}" {{
  type = "batch"
  group "g" {{
    restart {{
      attempts = 0
      mode     = "fail"
    }}
    reschedule {{
      attempts  = 0
      unlimited = false
    }}
    task "t" {{
      driver = "raw_exec"
      artifact {{
        source      = "{base}/site.tar.gz"
        destination = "local/site"
        options {{
          checksum = "sha256:{checksum}"
        }}
      }}
      artifact {{
        source = "{base}/private.txt"
        headers {{
          X-Token = "s3cret"
        }}
      }}
      config {{
        command = "/bin/sh"
        args    = ["-c", "cat ${{NOMAD_TASK_DIR}}/site/index.html ${{NOMAD_TASK_DIR}}/site/sub/data.txt ${{NOMAD_TASK_DIR}}/private.txt"]
      }}
    }}
  }}
}}
"#
    )
}

#[test]
fn artifacts_are_fetched_checked_and_unpacked_and_a_wrong_checksum_fails_the_task() {
    let site = tarball(&[("index.html", "hello artifact\n"), ("sub/data.txt", "nested data\n")]);
    let sum = sha256(&site);
    let base = serve([("/site.tar.gz", site), ("/private.txt", b"with the header\n".to_vec())].into());
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::dev(root.path(), "art1");

    let good = job_file(root.path(), "good.nomad", &job("fetch", &base, &sum));
    assert_eq!(agent.cli(&["job", "run", "-detach", &good]).code, 0);
    let alloc = wait_for("the allocation to complete", Duration::from_secs(30), || {
        let a = agent.allocs("fetch");
        let a = a.first()?;
        assert_ne!(a["ClientStatus"], "failed", "{a}");
        (a["ClientStatus"] == "complete").then(|| a["ID"].as_str().unwrap().to_string())
    });
    let logs = agent.cli(&["alloc", "logs", &alloc, "t"]);
    assert_eq!(logs.stdout, "hello artifact\nnested data\nwith the header\n", "{logs:?}");
    let status = agent.cli(&["alloc", "status", &alloc]);
    assert!(status.stdout.contains("Downloading Artifacts"), "{status:?}");

    let wrong = "0".repeat(64);
    let bad = job_file(root.path(), "bad.nomad", &job("badsum", &base, &wrong));
    assert_eq!(agent.cli(&["job", "run", "-detach", &bad]).code, 0);
    let a = wait_for("the allocation to fail", Duration::from_secs(30), || {
        let a = agent.allocs("badsum");
        let a = a.first()?;
        (a["ClientStatus"] == "failed").then(|| agent.get(&format!("/v1/allocation/{}", a["ID"].as_str().unwrap())))
    });
    let events = a["TaskStates"]["t"]["Events"].as_array().cloned().unwrap_or_default();
    let failed = events.iter().find(|e| e["Type"] == "Failed Artifact Download").unwrap_or_else(|| panic!("{a}"));
    let message = failed["DownloadError"].as_str().unwrap();
    assert!(message.contains(&format!("{base}/site.tar.gz")), "{message}");
    assert!(
        message.contains(&format!("checksums did not match: expected sha256:{wrong}, got sha256:{sum}")),
        "{message}"
    );
    assert!(!agent.dir.join("alloc").join(a["ID"].as_str().unwrap()).join("t/local/site/index.html").exists());

    let refused = job_file(root.path(), "git.nomad", &job("gitsrc", "git::https://example.com/repo", &sum));
    let v = agent.cli(&["job", "validate", &refused]);
    assert_ne!(v.code, 0, "{v:?}");
    assert!(v.stderr.contains("is not supported by berth: only http:// and https://"), "{v:?}");
}
