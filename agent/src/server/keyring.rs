//! The servers' signing keyring: an Ed25519 key that signs workload
//! identities (JWTs, `alg` EdDSA, `kid` the key's ID) and is published at
//! `/.well-known/jwks.json` for anyone to verify them. The key is made on
//! a server's first start and kept in `<data_dir>/server/keystore/` (mode
//! 0600); a server without a data directory keeps one in memory.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// Why the keyring could not be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Reading or writing the keystore failed.
    #[error("keystore {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A key file is not one this server wrote.
    #[error("keystore {path}: {detail}")]
    Malformed { path: String, detail: String },
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// A key as stored on disk.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    key_id: String,
    algorithm: String,
    /// PKCS#8 v1 (what JWK export reads), base64.
    pkcs8: String,
    create_time: i64,
}

/// The active signing key.
pub struct Keyring {
    key_id: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

fn generate_pkcs8() -> Result<Vec<u8>, KeyringError> {
    let doc = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|e| KeyringError::Sign(e.to_string()))?;
    Ok(doc.as_ref().to_vec())
}

impl Keyring {
    /// A fresh key held in memory only.
    pub fn ephemeral() -> Result<Self, KeyringError> {
        Self::from_pkcs8(crate::util::new_id(), &generate_pkcs8()?)
    }

    /// The key in `dir` (the newest, if several), made and stored there on
    /// first use.
    pub fn open(dir: &Path) -> Result<Self, KeyringError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| KeyringError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut newest: Option<(i64, StoredKey, String)> = None;
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let shown = path.display().to_string();
            let key: StoredKey = serde_json::from_str(&text)
                .map_err(|e| KeyringError::Malformed { path: shown.clone(), detail: e.to_string() })?;
            if newest.as_ref().is_none_or(|(t, _, _)| key.create_time > *t) {
                newest = Some((key.create_time, key, shown));
            }
        }
        if let Some((_, key, path)) = newest {
            if key.algorithm != "EdDSA" {
                return Err(KeyringError::Malformed { path, detail: format!("unknown algorithm {:?}", key.algorithm) });
            }
            let pkcs8 = base64::engine::general_purpose::STANDARD
                .decode(&key.pkcs8)
                .map_err(|e| KeyringError::Malformed { path: path.clone(), detail: e.to_string() })?;
            return Self::from_pkcs8(key.key_id, &pkcs8)
                .map_err(|e| KeyringError::Malformed { path, detail: e.to_string() });
        }
        let pkcs8 = generate_pkcs8()?;
        let key_id = crate::util::new_id();
        let stored = StoredKey {
            key_id: key_id.clone(),
            algorithm: "EdDSA".into(),
            pkcs8: base64::engine::general_purpose::STANDARD.encode(&pkcs8),
            create_time: crate::util::now_nanos(),
        };
        let path = dir.join(format!("{key_id}.json"));
        let text = serde_json::to_string(&stored).map_err(|e| KeyringError::Sign(e.to_string()))?;
        write_private(&path, text.as_bytes()).map_err(io(&path))?;
        tracing::info!(key_id = %key_id, "made the servers' signing key");
        Self::from_pkcs8(key_id, &pkcs8)
    }

    fn from_pkcs8(key_id: String, pkcs8: &[u8]) -> Result<Self, KeyringError> {
        Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| KeyringError::Sign(e.to_string()))?;
        let encoding = EncodingKey::from_ed_der(pkcs8);
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).map_err(|e| KeyringError::Sign(e.to_string()))?;
        jwk.common.key_id = Some(key_id.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Ok(Keyring { key_id, encoding, jwk })
    }

    /// The JWT of `claims`, signed with the active key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyringError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| KeyringError::Sign(e.to_string()))
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.jwk.clone()] }
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_survives_a_restart_and_verifies_what_it_signed() {
        let dir = tempfile::tempdir().unwrap();
        let first = Keyring::open(dir.path()).unwrap();
        let token = first.sign(&serde_json::json!({"sub": "x", "aud": "nomadproject.io"})).unwrap();
        let again = Keyring::open(dir.path()).unwrap();
        assert_eq!(again.key_id, first.key_id);
        let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        let jwks = again.jwks();
        let jwk = jwks.find(&first.key_id).expect("the key is published");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["nomadproject.io"]);
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap().claims;
        assert_eq!(claims["sub"], "x");
        let other = Keyring::ephemeral().unwrap();
        let forged = other.sign(&serde_json::json!({"sub": "x", "aud": "nomadproject.io"})).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&forged, &key, &validation).is_err());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.json"), "{not json").unwrap();
        let err = Keyring::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("k.json"), "{err}");
    }
}
