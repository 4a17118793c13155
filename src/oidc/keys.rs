//! The ID-token signing key: RS256 (every OpenID Connect relying party supports it), generated on
//! first start, kept on disk (0600, written atomically), published as a JWK with a stable `kid`.

use std::io::Write;
use std::path::Path;

use crate::base::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read the signing key: {message}")]
    Read { path: String, message: String },
    #[error("{path}: cannot write the signing key: {message}")]
    Write { path: String, message: String },
    #[error("cannot generate a signing key: {0}")]
    Generate(String),
}

pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public key as a JWK, for the JWKS document.
    pub jwk: serde_json::Value,
}

const KEY_BITS: usize = 2048;

impl SigningKey {
    /// Loads the key at `path`, or generates and saves one if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), KeyError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let key = RsaPrivateKey::from_pkcs1_pem(&pem).map_err(|e| KeyError::Read {
                    path: shown,
                    message: format!("not a PKCS#1 RSA key: {e}"),
                })?;
                Ok((SigningKey::from_rsa(&key)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                let pem = key
                    .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                write_private(path, pem.as_bytes()).map_err(|e| KeyError::Write {
                    path: shown,
                    message: e.to_string(),
                })?;
                Ok((SigningKey::from_rsa(&key)?, true))
            }
            Err(e) => Err(KeyError::Read {
                path: shown,
                message: e.to_string(),
            }),
        }
    }

    fn from_rsa(key: &RsaPrivateKey) -> Result<SigningKey, KeyError> {
        let der = key
            .to_pkcs1_der()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let public = key.to_public_key();
        let public_der = public
            .to_pkcs1_der()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let kid = digest::hex(&digest::sha256(public_der.as_bytes())[..8]);
        let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
        Ok(SigningKey {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding: DecodingKey::from_rsa_components(&n, &e)
                .map_err(|e| KeyError::Generate(e.to_string()))?,
            jwk: serde_json::json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e }),
            kid,
        })
    }
}

/// Writes a file readable by its owner only: a temp file beside it, then a rename.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
