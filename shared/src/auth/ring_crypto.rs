//! `jsonwebtoken`'s cryptography backed by `ring` — the library rustls already links here.
//!
//! Why not jsonwebtoken's own backends: `rust_crypto` verified ES256 in ~250 µs and RS256/PS256
//! in ~185 µs on this machine kind (shared/benches/jwt.rs), over the 100 µs budget, and it links
//! four more crypto stacks into every Lambda binary; `aws_lc_rs` costs Lambda init time (entropy
//! gathering) and a C build. ring verifies all of them well under budget with no init cost.
//!
//! Verification covers every algorithm the API accepts. Signing is HMAC only (the dev `token`
//! command and tests); asymmetric signing is never needed by the API and is refused.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{hmac, signature as sig};

static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes ring the process-wide jsonwebtoken backend. Idempotent; called before any token is
/// verified or signed (by `Verifier::new` and the dev token minting).
pub fn install() {
    // Err means a provider is already installed: ours, from an earlier call.
    let _ = RING_PROVIDER.install_default();
}

fn hmac_algorithm(alg: Algorithm) -> Option<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

struct HmacSigner {
    algorithm: Algorithm,
    key: hmac::Key,
}

impl signature::Signer<Vec<u8>> for HmacSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.key, message).as_ref().to_vec())
    }
}

impl JwtSigner for HmacSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn signer(alg: &Algorithm, key: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    match hmac_algorithm(*alg) {
        Some(hmac_alg) if key.family() == AlgorithmFamily::Hmac => Ok(Box::new(HmacSigner {
            algorithm: *alg,
            key: hmac::Key::new(hmac_alg, key.as_bytes()),
        })),
        _ => Err(Error::from(ErrorKind::InvalidAlgorithm)),
    }
}

enum Key {
    Hmac(hmac::Key),
    Public(&'static dyn sig::VerificationAlgorithm, Vec<u8>),
    Rsa(&'static sig::RsaParameters, Vec<u8>, Vec<u8>),
}

struct RingVerifier {
    algorithm: Algorithm,
    key: Key,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match &self.key {
            Key::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Key::Public(alg, bytes) => sig::UnparsedPublicKey::new(*alg, bytes)
                .verify(message, signature)
                .is_ok(),
            Key::Rsa(params, n, e) => sig::RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok(),
        };
        if verified {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    let invalid = || Error::from(ErrorKind::InvalidAlgorithm);
    // The key's family must match the algorithm: no HMAC with public-key bytes, ever.
    if !key.family().algorithms().contains(alg) {
        return Err(invalid());
    }
    let public: Option<&'static dyn sig::VerificationAlgorithm> = match alg {
        Algorithm::EdDSA => Some(&sig::ED25519),
        Algorithm::ES256 => Some(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&sig::ECDSA_P384_SHA384_FIXED),
        _ => None,
    };
    let rsa: Option<&'static sig::RsaParameters> = match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&sig::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    let key = match (key.kind(), hmac_algorithm(*alg), public, rsa) {
        (DecodingKeyKind::SecretOrDer(secret), Some(hmac_alg), _, _) => {
            Key::Hmac(hmac::Key::new(hmac_alg, secret))
        }
        (DecodingKeyKind::SecretOrDer(bytes), None, Some(public), _) => {
            Key::Public(public, bytes.clone())
        }
        (DecodingKeyKind::RsaModulusExponent { n, e }, None, None, Some(params)) => {
            Key::Rsa(params, n.clone(), e.clone())
        }
        _ => return Err(invalid()),
    };
    Ok(Box::new(RingVerifier {
        algorithm: *alg,
        key,
    }))
}
