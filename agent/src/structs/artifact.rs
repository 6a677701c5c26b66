//! Reading a task `artifact` block: its checksum option, where its
//! destination lands, and what validation refuses. The client's fetcher
//! uses the same readings. [`in_allocation`] is Nomad's file sandbox for
//! artifact and template paths: inside the allocation directory.

use std::path::{Component, Path, PathBuf};

use super::TaskArtifact;

/// Checksum types artifacts may name (go-getter's).
pub const CHECKSUM_KINDS: [&str; 4] = ["md5", "sha1", "sha256", "sha512"];

/// `type:value`, with a known type and a hex value; lower case.
pub fn parse_checksum(text: &str) -> Option<(String, String)> {
    let (kind, value) = text.split_once(':')?;
    let kind = kind.trim().to_ascii_lowercase();
    let value = value.trim().to_ascii_lowercase();
    (CHECKSUM_KINDS.contains(&kind.as_str()) && !value.is_empty() && value.chars().all(|c| c.is_ascii_hexdigit()))
        .then_some((kind, value))
}

/// `dest` under `root`, resolved lexically (a leading `/` is the task
/// directory's); `None` if it leaves `root`.
pub fn inside(root: &Path, dest: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(dest).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                if out == root {
                    return None;
                }
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Where a task's path (already interpolated) lands on the client: a
/// relative path, or an absolute one outside `alloc_root`, is taken from
/// the task's directory (`alloc_root/task`); `None` if the result leaves
/// the allocation directory (`../alloc/x`, the shared directory, is in).
pub fn in_allocation(alloc_root: &Path, task: &str, path: &str) -> Option<PathBuf> {
    if let Ok(rest) = Path::new(path).strip_prefix(alloc_root) {
        return inside(alloc_root, &rest.to_string_lossy());
    }
    inside(alloc_root, &format!("{task}/{}", path.trim_start_matches('/')))
}

impl TaskArtifact {
    /// What is wrong with the block before anything is fetched; values
    /// with runtime references are checked once they are filled in.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let source = self.getter_source.trim();
        if source.is_empty() {
            out.push("artifact has no source".to_string());
        } else if !(source.contains("${") || source.starts_with("http://") || source.starts_with("https://")) {
            out.push(format!(
                "artifact source {source:?} is not supported by berth: only http:// and https:// URLs are (git, s3, gcs and hg sources need go-getter)"
            ));
        }
        if !["any", "file", "dir"].contains(&self.getter_mode.as_str()) {
            out.push(format!("artifact mode {:?} must be \"any\", \"file\" or \"dir\"", self.getter_mode));
        }
        if !self.relative_dest.contains("${")
            && in_allocation(Path::new("/alloc"), "task", &self.relative_dest).is_none()
        {
            out.push(format!("artifact destination {:?} escapes the allocation directory", self.relative_dest));
        }
        if let Some(c) = self.getter_options.get("checksum").filter(|c| !c.contains("${")) {
            if parse_checksum(c).is_none() {
                out.push(format!("artifact checksum {c:?} must be type:value with md5, sha1, sha256 or sha512"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_destinations_are_read_and_checked() {
        assert_eq!(parse_checksum("SHA256:ABCD"), Some(("sha256".into(), "abcd".into())));
        assert_eq!(parse_checksum("crc32:abcd"), None);
        assert_eq!(parse_checksum("sha256:xyz"), None);
        let root = Path::new("/t");
        assert_eq!(inside(root, "local/"), Some(PathBuf::from("/t/local")));
        assert_eq!(inside(root, "local/../secrets/x"), Some(PathBuf::from("/t/secrets/x")));
        assert_eq!(inside(root, "/local/a"), Some(PathBuf::from("/t/local/a")));
        assert_eq!(inside(root, "../escape"), None);
        let alloc = Path::new("/data/alloc/a1");
        let at = |p: &str| in_allocation(alloc, "web", p);
        assert_eq!(at("local/app.conf"), Some(alloc.join("web/local/app.conf")));
        assert_eq!(at("/local/app.conf"), Some(alloc.join("web/local/app.conf")), "a driver's view of local/");
        assert_eq!(at("/etc/passwd"), Some(alloc.join("web/etc/passwd")), "joined onto the task dir, as Nomad");
        assert_eq!(at("/data/alloc/a1/web/secrets/x"), Some(alloc.join("web/secrets/x")), "a host path inside");
        assert_eq!(at("../alloc/shared.txt"), Some(alloc.join("alloc/shared.txt")));
        assert_eq!(at("../../other/x"), None);
        assert_eq!(at("/data/alloc/a1/../a2/x"), None);
        let bad = TaskArtifact {
            getter_source: "https://x/y".into(),
            getter_mode: "folder".into(),
            relative_dest: "../../etc".into(),
            getter_options: [("checksum".to_string(), "sha256".to_string())].into(),
            ..Default::default()
        };
        let p = bad.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[1].contains("escapes the allocation directory"), "{p:?}");
        let git = TaskArtifact {
            getter_source: "git::https://example.com/repo".into(),
            getter_mode: "any".into(),
            ..Default::default()
        };
        assert!(
            git.problems()[0].contains("is not supported by berth: only http:// and https://"),
            "{:?}",
            git.problems()
        );
    }
}
