//! Task artifacts: what Nomad's `artifact` block fetches with go-getter,
//! for http and https sources. A file is streamed into the task
//! directory with its checksum computed on the way (`options { checksum =
//! "sha256:…" }`, also md5, sha1 and sha512), then placed as a file or,
//! when its name says it is an archive (`.tar`, `.tar.gz`/`.tgz`, `.zip`,
//! `.gz`), unpacked; `options { archive = "false" }` keeps it packed.
//! Other sources (`git::`, `s3::`, …) are refused by name.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use sha2::Digest;

use crate::structs::artifact::{in_allocation, parse_checksum};
use crate::structs::TaskArtifact;

/// How long one artifact may take to download (Nomad's `http_read_timeout`).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Why an artifact could not be fetched. The messages name the source.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Not an http(s) URL.
    #[error("artifact source {0:?} is not supported by berth: only http:// and https:// URLs are (git, s3, gcs and hg sources need go-getter)")]
    Unsupported(String),
    /// The destination leaves the allocation directory.
    #[error("artifact destination {0:?} escapes the allocation directory")]
    Escapes(String),
    /// `options { checksum }` cannot be read.
    #[error("artifact {source_url:?}: invalid checksum {checksum:?}: use type:value with md5, sha1, sha256 or sha512")]
    BadChecksum {
        /// The source.
        source_url: String,
        /// The option as given.
        checksum: String,
    },
    /// The download failed.
    #[error("failed to download artifact {source_url:?}: {reason}")]
    Download {
        /// The source.
        source_url: String,
        /// What went wrong.
        reason: String,
    },
    /// The file is not what the checksum says.
    #[error("failed to download artifact {source_url:?}: checksums did not match: expected {expected}, got {got}")]
    Checksum {
        /// The source.
        source_url: String,
        /// The checksum asked for.
        expected: String,
        /// The checksum of what came.
        got: String,
    },
    /// Placing or unpacking the file failed.
    #[error("artifact {source_url:?}: {reason}")]
    Unpack {
        /// The source.
        source_url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Archive formats the file name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    Tar,
    TarGz,
    Zip,
    /// One gzipped file.
    Gz,
}

impl Archive {
    fn of(path: &str) -> Option<Archive> {
        let name = path.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Archive::TarGz)
        } else if name.ends_with(".tar") {
            Some(Archive::Tar)
        } else if name.ends_with(".zip") {
            Some(Archive::Zip)
        } else if name.ends_with(".gz") {
            Some(Archive::Gz)
        } else {
            None
        }
    }
}

/// A checksum to verify, and the hasher that computes it.
enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn for_kind(kind: &str) -> Option<Hasher> {
        Some(match kind {
            "md5" => Hasher::Md5(md5::Md5::new()),
            "sha1" => Hasher::Sha1(sha1::Sha1::new()),
            "sha256" => Hasher::Sha256(sha2::Sha256::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => return None,
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Fetches every artifact of a task into `task_dir`, in order; `interpolate`
/// fills in runtime references (`${NOMAD_TASK_DIR}`, `${attr.…}`).
pub async fn fetch_all(
    artifacts: &[TaskArtifact],
    alloc_root: &Path,
    task: &str,
    interpolate: impl Fn(&str) -> String,
) -> Result<(), ArtifactError> {
    let client = reqwest::Client::builder()
        .timeout(DOWNLOAD_TIMEOUT)
        .build()
        .map_err(|e| ArtifactError::Download { source_url: String::new(), reason: e.to_string() })?;
    for a in artifacts {
        let filled = TaskArtifact {
            getter_source: interpolate(&a.getter_source),
            getter_options: a.getter_options.iter().map(|(k, v)| (k.clone(), interpolate(v))).collect(),
            getter_headers: a.getter_headers.iter().map(|(k, v)| (k.clone(), interpolate(v))).collect(),
            getter_mode: a.getter_mode.clone(),
            relative_dest: interpolate(&a.relative_dest),
            chown: a.chown,
        };
        fetch(&client, &filled, alloc_root, task).await?;
    }
    Ok(())
}

async fn fetch(client: &reqwest::Client, a: &TaskArtifact, alloc_root: &Path, task: &str) -> Result<(), ArtifactError> {
    let source_url = a.getter_source.clone();
    let url = reqwest::Url::parse(&source_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| ArtifactError::Unsupported(source_url.clone()))?;
    let dest = in_allocation(alloc_root, task, &a.relative_dest)
        .ok_or_else(|| ArtifactError::Escapes(a.relative_dest.clone()))?;
    let checksum = match a.getter_options.get("checksum") {
        Some(c) => Some(
            parse_checksum(c)
                .ok_or_else(|| ArtifactError::BadChecksum { source_url: source_url.clone(), checksum: c.clone() })?,
        ),
        None => None,
    };
    let archive = match a.getter_options.get("archive").map(String::as_str) {
        Some("false") => None,
        _ => Archive::of(url.path()),
    };
    let download = |reason: String| ArtifactError::Download { source_url: source_url.clone(), reason };
    let unpack = |reason: String| ArtifactError::Unpack { source_url: source_url.clone(), reason };

    let mut request = client.get(url.clone());
    for (k, v) in &a.getter_headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request.send().await.map_err(|e| download(e.to_string()))?;
    if !response.status().is_success() {
        return Err(download(format!("bad response code: {}", response.status().as_u16())));
    }
    let task_dir = alloc_root.join(task);
    std::fs::create_dir_all(&task_dir).map_err(|e| unpack(format!("creating {}: {e}", task_dir.display())))?;
    let partial = task_dir.join(format!(".artifact-{}.part", &crate::util::new_id()[..8]));
    let mut file =
        std::fs::File::create(&partial).map_err(|e| unpack(format!("creating {}: {e}", partial.display())))?;
    let mut hasher = checksum.as_ref().and_then(|(kind, _)| Hasher::for_kind(kind));
    let mut body = response.bytes_stream();
    let streamed: Result<(), ArtifactError> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| download(e.to_string()))?;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            file.write_all(&chunk).map_err(|e| unpack(format!("writing {}: {e}", partial.display())))?;
        }
        Ok(())
    }
    .await;
    drop(file);
    let placed = streamed.and_then(|()| {
        if let (Some(h), Some((kind, expected))) = (hasher, checksum) {
            let got = h.hex();
            if got != expected {
                return Err(ArtifactError::Checksum {
                    source_url: source_url.clone(),
                    expected: format!("{kind}:{expected}"),
                    got: format!("{kind}:{got}"),
                });
            }
        }
        place(&partial, &dest, &a.getter_mode, archive, url.path()).map_err(unpack)
    });
    let _ = std::fs::remove_file(&partial);
    placed
}

/// Moves or unpacks the downloaded file at `partial` to `dest`.
fn place(partial: &Path, dest: &Path, mode: &str, archive: Option<Archive>, url_path: &str) -> Result<(), String> {
    let open = || std::fs::File::open(partial).map_err(|e| format!("reading the download: {e}"));
    let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()));
    match (mode, archive) {
        ("file", None) => {
            mkdir(dest.parent().unwrap_or(dest))?;
            std::fs::rename(partial, dest).map_err(|e| format!("writing {}: {e}", dest.display()))
        }
        ("file", Some(Archive::Gz)) => {
            mkdir(dest.parent().unwrap_or(dest))?;
            gunzip(open()?, dest)
        }
        ("file", Some(_)) => {
            Err("mode \"file\" cannot unpack an archive of several files; use \"any\" or \"dir\"".into())
        }
        ("dir", None) => Err("mode \"dir\" needs an archive (.tar, .tar.gz, .tgz, .zip)".into()),
        (_, None) => {
            let name = url_path.rsplit('/').next().filter(|n| !n.is_empty()).ok_or("the URL names no file")?;
            mkdir(dest)?;
            std::fs::rename(partial, dest.join(name)).map_err(|e| format!("writing {}: {e}", dest.join(name).display()))
        }
        (_, Some(Archive::Gz)) => {
            let name = url_path.rsplit('/').next().unwrap_or("").trim_end_matches(".gz").to_string();
            mkdir(dest)?;
            gunzip(open()?, &dest.join(if name.is_empty() { "file" } else { &name }))
        }
        (_, Some(Archive::Tar)) => {
            mkdir(dest)?;
            tar::Archive::new(open()?).unpack(dest).map_err(|e| format!("unpacking the tar archive: {e}"))
        }
        (_, Some(Archive::TarGz)) => {
            mkdir(dest)?;
            tar::Archive::new(flate2::read::GzDecoder::new(open()?))
                .unpack(dest)
                .map_err(|e| format!("unpacking the tar.gz archive: {e}"))
        }
        (_, Some(Archive::Zip)) => {
            mkdir(dest)?;
            zip::ZipArchive::new(open()?)
                .and_then(|mut z| z.extract(dest))
                .map_err(|e| format!("unpacking the zip archive: {e}"))
        }
    }
}

fn gunzip(from: std::fs::File, to: &Path) -> Result<(), String> {
    let mut out = std::fs::File::create(to).map_err(|e| format!("writing {}: {e}", to.display()))?;
    std::io::copy(&mut flate2::read::GzDecoder::new(from), &mut out)
        .map(|_| ())
        .map_err(|e| format!("unpacking the gzip file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_told_by_name() {
        assert_eq!(Archive::of("/a/site.tar.gz"), Some(Archive::TarGz));
        assert_eq!(Archive::of("/a/site.TGZ"), Some(Archive::TarGz));
        assert_eq!(Archive::of("/a/b.tar"), Some(Archive::Tar));
        assert_eq!(Archive::of("/a/b.zip"), Some(Archive::Zip));
        assert_eq!(Archive::of("/a/b.json.gz"), Some(Archive::Gz));
        assert_eq!(Archive::of("/a/b.json"), None);
    }

    #[test]
    fn hashes_are_lower_hex() {
        let mut h = Hasher::for_kind("sha256").unwrap();
        h.update(b"abc");
        assert_eq!(h.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut h = Hasher::for_kind("md5").unwrap();
        h.update(b"abc");
        assert_eq!(h.hex(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
