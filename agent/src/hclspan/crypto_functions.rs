//! Hashes and ciphers: `md5`, `sha1`, `sha256`, `sha512`, `bcrypt` (Go's
//! `$2a$` form, default cost 10) and `rsadecrypt` (RSA PKCS #1 v1.5 with a
//! PEM private key). Declared into the same context as `functions`.

use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine;
use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;
use sha2::Digest;

use super::func_support::{int, s, Res};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5(a: FuncArgs) -> Res {
    Ok(hex(&md5::Md5::digest(s(&a[0]).as_bytes())).into())
}
fn sha1(a: FuncArgs) -> Res {
    Ok(hex(&sha1::Sha1::digest(s(&a[0]).as_bytes())).into())
}
fn sha256(a: FuncArgs) -> Res {
    Ok(hex(&sha2::Sha256::digest(s(&a[0]).as_bytes())).into())
}
fn sha512(a: FuncArgs) -> Res {
    Ok(hex(&sha2::Sha512::digest(s(&a[0]).as_bytes())).into())
}

/// `bcrypt(str, cost?)`. As with Go's bcrypt, which Nomad uses, a cost
/// below the minimum of 4 means the default, and a password longer than
/// 72 bytes is refused rather than cut.
fn bcrypt_hash(a: FuncArgs) -> Res {
    if a.len() > 2 {
        return Err("bcrypt takes no more than two arguments".into());
    }
    let cost = match a.get(1) {
        Some(cost) => int(cost, "bcrypt cost")?,
        None => 10,
    };
    let cost = if cost < 4 { 10 } else { cost };
    if cost > 31 {
        return Err(format!("bcrypt: cost {cost} is above the maximum of 31"));
    }
    bcrypt::non_truncating_hash_with_result(s(&a[0]), cost as u32)
        .map(|hash| hash.format_for_version(bcrypt::Version::TwoA).into())
        .map_err(|e| format!("bcrypt: {e}"))
}

/// `rsadecrypt(ciphertext, privatekey)`: base64 `ciphertext` decrypted
/// with RSA PKCS #1 v1.5 by a PEM `RSA PRIVATE KEY` (PKCS #1, what Nomad
/// takes) or `PRIVATE KEY` (PKCS #8) of 2048 to 8192 bits.
fn rsadecrypt(a: FuncArgs) -> Res {
    let engine = base64::engine::general_purpose::STANDARD;
    let cipher = engine
        .decode(s(&a[0]))
        .map_err(|_| format!("rsadecrypt: failed to decode {:?}: the ciphertext must be base64-encoded", s(&a[0])))?;
    let (label, der) = pem(s(&a[1])).map_err(|e| format!("rsadecrypt: failed to parse the key: {e}"))?;
    let pkcs8 = match label.as_str() {
        "RSA PRIVATE KEY" => pkcs1_in_pkcs8(&der),
        "PRIVATE KEY" => der,
        other => return Err(format!("rsadecrypt: a PEM {other:?} is not an RSA private key")),
    };
    let key = PrivateDecryptingKey::from_pkcs8(&pkcs8)
        .map_err(|e| format!("rsadecrypt: failed to parse the key: {e}"))
        .and_then(|key| Pkcs1PrivateDecryptingKey::new(key).map_err(|e| format!("rsadecrypt: {e}")))?;
    let mut out = vec![0; key.min_output_size()];
    let plain = key.decrypt(&cipher, &mut out).map_err(|_| "rsadecrypt: decryption failed".to_string())?;
    String::from_utf8(plain.to_vec()).map(Value::from).map_err(|_| "rsadecrypt: the plaintext is not UTF-8".into())
}

/// The label and bytes of the first PEM block in `text`.
fn pem(text: &str) -> Result<(String, Vec<u8>), String> {
    let mut lines = text.lines().map(str::trim).skip_while(|l| !l.starts_with("-----BEGIN "));
    let label = lines
        .next()
        .and_then(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or("no PEM block found")?
        .to_string();
    let mut body = String::new();
    for line in lines {
        if line.starts_with("-----END ") {
            let der = base64::engine::general_purpose::STANDARD.decode(&body).map_err(|e| e.to_string())?;
            return Ok((label, der));
        }
        if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
            return Err("password protected keys are not supported; decrypt the key first".into());
        }
        if !line.contains(':') {
            body.push_str(line);
        }
    }
    Err(format!("the {label} block has no END line"))
}

/// A PKCS #1 RSAPrivateKey wrapped in a PKCS #8 PrivateKeyInfo.
fn pkcs1_in_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    fn der_len(n: usize) -> Vec<u8> {
        if n < 0x80 {
            return vec![n as u8];
        }
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        std::iter::once(0x80 | bytes.len() as u8).chain(bytes).collect()
    }
    // version 0, AlgorithmIdentifier { rsaEncryption, NULL }, OCTET STRING tag.
    let mut body = vec![2, 1, 0, 0x30, 13, 6, 9, 0x2a, 0x86, 0x48, 0x86, 0xf7, 13, 1, 1, 1, 5, 0, 4];
    body.extend(der_len(pkcs1.len()));
    body.extend(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

/// Declares these functions into `ctx`.
pub fn declare(ctx: &mut Context<'_>) {
    use ParamType::{Number as Num, String as Str};
    let fixed: [(&str, hcl::eval::Func, Vec<ParamType>); 5] = [
        ("md5", md5, vec![Str]),
        ("sha1", sha1, vec![Str]),
        ("sha256", sha256, vec![Str]),
        ("sha512", sha512, vec![Str]),
        ("rsadecrypt", rsadecrypt, vec![Str, Str]),
    ];
    for (name, func, params) in fixed {
        ctx.declare_func(name, FuncDef::new(func, params));
    }
    ctx.declare_func("bcrypt", FuncDef::builder().param(Str).variadic_param(Num).build(bcrypt_hash));
}

#[cfg(test)]
mod tests {
    use super::super::functions::tests::{eval, ok};
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, Pkcs1PublicEncryptingKey};

    #[test]
    fn hashes() {
        assert_eq!(ok(r#"sha256("abc")"#), "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"");
        assert_eq!(ok(r#"md5("abc")"#), "\"900150983cd24fb0d6963f7d28e17f72\"");
    }

    #[test]
    fn bcrypt_is_salted_go_style_with_cost_ten_by_default() {
        let hash = |expr: &str| eval(expr).unwrap().as_str().unwrap().to_string();
        let default = hash(r#"bcrypt("hunter2")"#);
        assert!(default.starts_with("$2a$10$"), "{default}");
        assert!(bcrypt::verify("hunter2", &default).unwrap());
        let cheap = hash(r#"bcrypt("hunter2", 4)"#);
        assert!(cheap.starts_with("$2a$04$") && cheap != hash(r#"bcrypt("hunter2", 4)"#), "salted");
        assert!(bcrypt::verify("hunter2", &cheap).unwrap() && !bcrypt::verify("hunter3", &cheap).unwrap());
        assert!(eval(r#"bcrypt("x", 32)"#).unwrap_err().contains("above the maximum"));
        assert!(eval(&format!("bcrypt(\"{}\", 4)", "x".repeat(73))).unwrap_err().contains("bcrypt: "));
    }

    /// The RSAPrivateKey (PKCS #1) inside a PKCS #8 document as
    /// `pkcs1_in_pkcs8` builds it.
    fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
        let skip_header = |der: &[u8]| match der[1] {
            n if n < 0x80 => 2,
            n => 2 + usize::from(n & 0x7f),
        };
        let inner = &pkcs8[skip_header(pkcs8) + 3 + 15..];
        inner[skip_header(inner)..].to_vec()
    }

    #[test]
    fn rsadecrypt_takes_pkcs1_and_pkcs8_keys() {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = key.as_der().unwrap().as_ref().to_vec();
        assert_eq!(pkcs1_in_pkcs8(&pkcs1_of(&pkcs8)), pkcs8);
        let public = Pkcs1PublicEncryptingKey::new(key.public_key()).unwrap();
        let mut cipher = vec![0; public.ciphertext_size()];
        let cipher = base64::engine::general_purpose::STANDARD.encode(public.encrypt(b"s3cret", &mut cipher).unwrap());
        let engine = base64::engine::general_purpose::STANDARD;
        for (label, der) in [("RSA PRIVATE KEY", pkcs1_of(&pkcs8)), ("PRIVATE KEY", pkcs8.clone())] {
            let pem = format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", engine.encode(der));
            assert_eq!(ok(&format!("rsadecrypt({cipher:?}, {pem:?})")), r#""s3cret""#);
        }
        assert!(eval(&format!("rsadecrypt(\"!\", {:?})", "x")).unwrap_err().contains("base64-encoded"));
        assert!(eval(&format!("rsadecrypt({cipher:?}, \"no key\")")).unwrap_err().contains("no PEM block"));
    }
}
