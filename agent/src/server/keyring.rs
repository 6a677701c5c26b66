//! The servers' keyring: root keys, each an AES-256-GCM key that encrypts
//! Variables at rest and an Ed25519 key that signs workload identities
//! (JWTs, `alg` EdDSA, `kid` the key's ID). One key is active (encrypts and
//! signs); the others stay to decrypt what they encrypted and to verify
//! what they signed, and all are published at `/.well-known/jwks.json`.
//! The first key is made on a server's first start; `rotate` makes a new
//! active one. Keys live in `<data_dir>/server/keystore/`, one file each
//! (mode 0600), never in the state store; a server without a data
//! directory keeps them in memory.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::structs::RootKeyMeta;

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
    /// Signing, encrypting or making a key failed.
    #[error("keyring: {0}")]
    Crypto(String),
    /// Data was encrypted with a key this server does not hold.
    #[error("root key {0} is not in the keyring")]
    MissingKey(String),
    /// Ciphertext did not decrypt: damaged, or bound to another path.
    #[error("data encrypted with root key {0} does not decrypt")]
    Undecryptable(String),
}

const STATE_ACTIVE: &str = "active";
const STATE_INACTIVE: &str = "inactive";
const ALGORITHM: &str = "aes256-gcm";

/// A key as stored on disk. Files of the first layout (a signing key
/// only) are given an encryption key on load.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    key_id: String,
    /// The signing algorithm (`EdDSA`).
    algorithm: String,
    /// The Ed25519 key, PKCS#8 v1 (what JWK export reads), base64.
    pkcs8: String,
    create_time: i64,
    /// The AES-256 key, base64.
    #[serde(default)]
    aes: String,
    #[serde(default)]
    state: String,
}

/// One root key, usable.
struct RootKey {
    meta: RootKeyMeta,
    encoding: EncodingKey,
    jwk: Jwk,
    aead: LessSafeKey,
}

/// The root keys; exactly one is active.
pub struct Keyring {
    dir: Option<PathBuf>,
    keys: RwLock<Vec<RootKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("keys", &self.list()).finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeyringError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|e| KeyringError::Crypto(e.to_string()))?;
    Ok(out)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl StoredKey {
    fn generate() -> Result<StoredKey, KeyringError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|e| KeyringError::Crypto(e.to_string()))?;
        Ok(StoredKey {
            key_id: crate::util::new_id(),
            algorithm: "EdDSA".into(),
            pkcs8: b64().encode(pkcs8.as_ref()),
            create_time: crate::util::now_nanos(),
            aes: b64().encode(random::<32>()?),
            state: STATE_ACTIVE.into(),
        })
    }

    fn usable(&self) -> Result<RootKey, String> {
        if self.algorithm != "EdDSA" {
            return Err(format!("unknown algorithm {:?}", self.algorithm));
        }
        let pkcs8 = b64().decode(&self.pkcs8).map_err(|e| e.to_string())?;
        Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| e.to_string())?;
        let encoding = EncodingKey::from_ed_der(&pkcs8);
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).map_err(|e| e.to_string())?;
        jwk.common.key_id = Some(self.key_id.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let aes = b64().decode(&self.aes).map_err(|e| e.to_string())?;
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &aes).map_err(|_| "bad AES-256 key".to_string())?);
        let meta = RootKeyMeta {
            key_id: self.key_id.clone(),
            algorithm: ALGORITHM.into(),
            create_time: self.create_time,
            state: self.state.clone(),
            ..Default::default()
        };
        Ok(RootKey { meta, encoding, jwk, aead })
    }
}

impl Keyring {
    /// A fresh key held in memory only.
    pub fn ephemeral() -> Result<Self, KeyringError> {
        let key = StoredKey::generate()?.usable().map_err(KeyringError::Crypto)?;
        Ok(Keyring { dir: None, keys: RwLock::new(vec![key]) })
    }

    /// The keys in `dir`, with one made and stored there on first use. The
    /// active key is the newest marked active (the newest, for files of
    /// the first layout).
    pub fn open(dir: &Path) -> Result<Self, KeyringError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| KeyringError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut stored: Vec<(StoredKey, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let key: StoredKey = serde_json::from_str(&text)
                .map_err(|e| KeyringError::Malformed { path: path.display().to_string(), detail: e.to_string() })?;
            stored.push((key, path));
        }
        stored.sort_by_key(|(k, _)| k.create_time);
        let ring = Keyring { dir: Some(dir.to_path_buf()), keys: RwLock::new(Vec::new()) };
        if stored.is_empty() {
            let key = StoredKey::generate()?;
            ring.store(&key)?;
            tracing::info!(key_id = %key.key_id, "made the servers' first root key");
            let path = dir.join(format!("{}.json", key.key_id));
            stored.push((key, path));
        }
        let active = stored.iter().rposition(|(k, _)| k.state == STATE_ACTIVE).unwrap_or(stored.len() - 1);
        let mut keys = Vec::new();
        for (i, (mut key, path)) in stored.into_iter().enumerate() {
            let state = if i == active { STATE_ACTIVE } else { STATE_INACTIVE };
            if key.aes.is_empty() || key.state != state {
                if key.aes.is_empty() {
                    key.aes = b64().encode(random::<32>()?);
                }
                key.state = state.into();
                ring.store(&key)?;
            }
            let usable =
                key.usable().map_err(|detail| KeyringError::Malformed { path: path.display().to_string(), detail })?;
            keys.push(usable);
        }
        *ring.keys.write() = keys;
        Ok(ring)
    }

    fn store(&self, key: &StoredKey) -> Result<(), KeyringError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(format!("{}.json", key.key_id));
        let text = serde_json::to_string(key).map_err(|e| KeyringError::Crypto(e.to_string()))?;
        write_private(&path, text.as_bytes())
            .map_err(|source| KeyringError::Io { path: path.display().to_string(), source })
    }

    /// Every key's metadata, oldest first.
    pub fn list(&self) -> Vec<RootKeyMeta> {
        self.keys.read().iter().map(|k| k.meta.clone()).collect()
    }

    /// Makes a new active key; the others become inactive (they still
    /// decrypt and verify). Returns the new key's metadata.
    pub fn rotate(&self) -> Result<RootKeyMeta, KeyringError> {
        let fresh = StoredKey::generate()?;
        let mut keys = self.keys.write();
        for old in keys.iter_mut().filter(|k| k.meta.state == STATE_ACTIVE) {
            old.meta.state = STATE_INACTIVE.into();
            if let Some(dir) = &self.dir {
                let path = dir.join(format!("{}.json", old.meta.key_id));
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| KeyringError::Io { path: path.display().to_string(), source })?;
                let mut stored: StoredKey = serde_json::from_str(&text)
                    .map_err(|e| KeyringError::Malformed { path: path.display().to_string(), detail: e.to_string() })?;
                stored.state = STATE_INACTIVE.into();
                self.store(&stored)?;
            }
        }
        self.store(&fresh)?;
        let usable = fresh.usable().map_err(KeyringError::Crypto)?;
        let meta = usable.meta.clone();
        keys.push(usable);
        tracing::info!(key_id = %meta.key_id, "rotated the root key");
        Ok(meta)
    }

    /// The active key's ID.
    pub fn active_key_id(&self) -> String {
        let keys = self.keys.read();
        keys.iter().find(|k| k.meta.state == STATE_ACTIVE).map(|k| k.meta.key_id.clone()).unwrap_or_default()
    }

    /// The JWT of `claims`, signed with the active key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyringError> {
        let keys = self.keys.read();
        let key =
            keys.iter().find(|k| k.meta.state == STATE_ACTIVE).ok_or(KeyringError::MissingKey("active".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.meta.key_id.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| KeyringError::Crypto(e.to_string()))
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.keys.read().iter().map(|k| k.jwk.clone()).collect() }
    }

    /// Encrypts `plain` with the active key, bound to `aad` (what it
    /// belongs to, so that it cannot be moved elsewhere): returns the key's
    /// ID and the nonce followed by the ciphertext.
    pub fn encrypt(&self, aad: &[u8], plain: &[u8]) -> Result<(String, Vec<u8>), KeyringError> {
        let keys = self.keys.read();
        let key =
            keys.iter().find(|k| k.meta.state == STATE_ACTIVE).ok_or(KeyringError::MissingKey("active".into()))?;
        let nonce = random::<NONCE_LEN>()?;
        let mut sealed = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut sealed)
            .map_err(|e| KeyringError::Crypto(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok((key.meta.key_id.clone(), out))
    }

    /// Decrypts what [`Self::encrypt`] returned.
    pub fn decrypt(&self, key_id: &str, aad: &[u8], data: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let keys = self.keys.read();
        let key = keys.iter().find(|k| k.meta.key_id == key_id).ok_or(KeyringError::MissingKey(key_id.into()))?;
        if data.len() < NONCE_LEN {
            return Err(KeyringError::Undecryptable(key_id.into()));
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyringError::Undecryptable(key_id.into()))?;
        let mut buf = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| KeyringError::Undecryptable(key_id.into()))?;
        Ok(plain.to_vec())
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
        assert_eq!(again.active_key_id(), first.active_key_id());
        let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        let jwks = again.jwks();
        let jwk = jwks.find(&first.active_key_id()).expect("the key is published");
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
    fn rotation_keeps_old_keys_for_decrypting_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path()).unwrap();
        let (old_id, sealed) = ring.encrypt(b"default/nomad/jobs/web", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(ring.decrypt(&old_id, b"default/nomad/jobs/web", &sealed).unwrap(), b"hunter2");
        let moved = ring.decrypt(&old_id, b"default/nomad/jobs/db", &sealed).unwrap_err();
        assert!(matches!(moved, KeyringError::Undecryptable(_)), "bound to its path: {moved}");

        let new = ring.rotate().unwrap();
        assert_ne!(new.key_id, old_id);
        assert_eq!(ring.active_key_id(), new.key_id);
        let again = Keyring::open(dir.path()).unwrap();
        let states: Vec<(String, String)> = again.list().into_iter().map(|k| (k.key_id, k.state)).collect();
        assert_eq!(states, vec![(old_id.clone(), "inactive".into()), (new.key_id.clone(), "active".into())]);
        assert_eq!(again.decrypt(&old_id, b"default/nomad/jobs/web", &sealed).unwrap(), b"hunter2");
        assert_eq!(again.jwks().keys.len(), 2, "both keys still verify");
        assert!(matches!(again.decrypt("nope", b"", &sealed), Err(KeyringError::MissingKey(_))));
    }

    #[test]
    fn a_key_file_of_the_first_layout_gains_an_encryption_key() {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
        let old = serde_json::json!({"key_id": "k1", "algorithm": "EdDSA",
            "pkcs8": b64().encode(pkcs8.as_ref()), "create_time": 1});
        std::fs::write(dir.path().join("k1.json"), old.to_string()).unwrap();
        let ring = Keyring::open(dir.path()).unwrap();
        assert_eq!(ring.active_key_id(), "k1");
        let (id, sealed) = ring.encrypt(b"a", b"b").unwrap();
        let again = Keyring::open(dir.path()).unwrap();
        assert_eq!(again.decrypt(&id, b"a", &sealed).unwrap(), b"b");
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.json"), "{not json").unwrap();
        let err = Keyring::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("k.json"), "{err}");
    }
}
