//! The agent's own pause image, `berth/pause:<version>`: a static binary
//! built with the agent (`pause/pause.c`), packed into a one-file image in
//! memory and imported through the Docker API when missing. Bridge-mode
//! allocations use it to hold their network namespace; no registry is
//! involved.

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures::StreamExt;

/// The pause binary, built by build.rs.
const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Repository of the pause image.
pub const PAUSE_REPO: &str = "berth/pause";

/// The pause image reference for this build.
pub fn pause_image() -> String {
    format!("{PAUSE_REPO}:{}", crate::VERSION)
}

/// A tar archive holding `/pause` (mode 0755).
fn image_tar() -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(PAUSE_BINARY.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_cksum();
    builder.append_data(&mut header, "pause", PAUSE_BINARY)?;
    builder.into_inner()
}

/// Imports the pause image unless the engine already has it.
pub async fn ensure_pause_image(docker: &Docker) -> Result<(), String> {
    let image = pause_image();
    if docker.inspect_image(&image).await.is_ok() {
        return Ok(());
    }
    let tar = image_tar().map_err(|e| format!("packing the pause image: {e}"))?;
    let opts = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(PAUSE_REPO.into()),
        tag: Some(crate::VERSION.into()),
        changes: vec!["ENTRYPOINT [\"/pause\"]".into()],
        ..Default::default()
    };
    let mut import = docker.create_image(Some(opts), Some(bollard::body_full(tar.into())), None);
    while let Some(item) = import.next().await {
        item.map_err(|e| format!("importing {image}: {e}"))?;
    }
    tracing::info!(%image, "imported the pause image");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_binary_is_a_static_elf() {
        assert_eq!(&PAUSE_BINARY[..4], b"\x7fELF");
        assert!(PAUSE_BINARY.len() < 2 * 1024 * 1024, "{} bytes", PAUSE_BINARY.len());
        let tar = image_tar().unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("pause"));
        assert_eq!(entry.header().mode().unwrap(), 0o755);
    }
}
