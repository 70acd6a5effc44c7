//! Hashing a password into a PHC string, and verifying a password against
//! one. The cost parameters travel inside the PHC string, so entries made
//! with different costs (or algorithms) verify side by side.

use argon2::Argon2;
use password_hash::rand_core::OsRng;
use password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use pbkdf2::Pbkdf2;

use crate::PasswdError;

/// Argon2id memory cost, in KiB (the OWASP recommendation).
pub const ARGON2_DEFAULT_M_COST_KIB: u32 = 19_456;
/// Argon2id passes.
pub const ARGON2_DEFAULT_T_COST: u32 = 2;
/// PBKDF2-SHA512 rounds (the OWASP recommendation).
pub const PBKDF2_DEFAULT_ROUNDS: u32 = 210_000;
/// PBKDF2 output length in bytes (the SHA-512 digest size).
const PBKDF2_OUTPUT_BYTES: usize = 64;

/// A hash algorithm the file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Argon2id,
    Pbkdf2Sha512,
}

impl Algorithm {
    /// The name used on command lines: `argon2id` or `pbkdf2-sha512`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Argon2id => "argon2id",
            Algorithm::Pbkdf2Sha512 => "pbkdf2-sha512",
        }
    }

    /// The algorithm of a PHC string, if it is one this crate supports.
    pub fn of_phc(phc: &str) -> Option<Algorithm> {
        let hash = PasswordHash::new(phc).ok()?;
        match hash.algorithm.as_str() {
            "argon2id" => Some(Algorithm::Argon2id),
            "pbkdf2-sha512" => Some(Algorithm::Pbkdf2Sha512),
            _ => None,
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "argon2id" | "argon2" => Ok(Algorithm::Argon2id),
            "pbkdf2-sha512" | "pbkdf2" => Ok(Algorithm::Pbkdf2Sha512),
            other => Err(format!(
                "unknown hash algorithm `{other}` (expected argon2id or pbkdf2-sha512)"
            )),
        }
    }
}

/// Makes new hashes with one algorithm and cost.
#[derive(Debug, Clone)]
pub struct Hasher {
    kind: HasherKind,
}

#[derive(Debug, Clone)]
enum HasherKind {
    Argon2id(argon2::Params),
    Pbkdf2Sha512(pbkdf2::Params),
}

impl Default for Hasher {
    /// Argon2id with the recommended cost.
    fn default() -> Self {
        Hasher::new(Algorithm::Argon2id)
    }
}

impl Hasher {
    /// `algorithm` with its recommended cost.
    pub fn new(algorithm: Algorithm) -> Hasher {
        let made = match algorithm {
            Algorithm::Argon2id => {
                Hasher::argon2id(ARGON2_DEFAULT_M_COST_KIB, ARGON2_DEFAULT_T_COST, 1)
            }
            Algorithm::Pbkdf2Sha512 => Ok(Hasher::pbkdf2_sha512(PBKDF2_DEFAULT_ROUNDS)),
        };
        // The default parameters are valid constants.
        made.unwrap_or_else(|_| Hasher::pbkdf2_sha512(PBKDF2_DEFAULT_ROUNDS))
    }

    /// Argon2id with an explicit cost (memory in KiB, passes, lanes).
    pub fn argon2id(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Hasher, PasswdError> {
        let params = argon2::Params::new(m_cost_kib, t_cost, p_cost, None)
            .map_err(|e| PasswdError::Hash(e.to_string()))?;
        Ok(Hasher {
            kind: HasherKind::Argon2id(params),
        })
    }

    /// PBKDF2-SHA512 with `rounds` iterations.
    pub fn pbkdf2_sha512(rounds: u32) -> Hasher {
        Hasher {
            kind: HasherKind::Pbkdf2Sha512(pbkdf2::Params {
                rounds,
                output_length: PBKDF2_OUTPUT_BYTES,
            }),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.kind {
            HasherKind::Argon2id(_) => Algorithm::Argon2id,
            HasherKind::Pbkdf2Sha512(_) => Algorithm::Pbkdf2Sha512,
        }
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string.
    pub fn hash(&self, password: &[u8]) -> Result<String, PasswdError> {
        let salt = SaltString::generate(&mut OsRng);
        let err = |e: password_hash::Error| PasswdError::Hash(e.to_string());
        let phc = match &self.kind {
            HasherKind::Argon2id(params) => Argon2::new(
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                params.clone(),
            )
            .hash_password(password, &salt)
            .map_err(err)?
            .to_string(),
            HasherKind::Pbkdf2Sha512(params) => Pbkdf2
                .hash_password_customized(
                    password,
                    Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()),
                    None,
                    *params,
                    &salt,
                )
                .map_err(err)?
                .to_string(),
        };
        Ok(phc)
    }
}

/// Whether `password` matches the PHC string `phc`. An unparsable or
/// unsupported hash never matches. The comparison is constant-time.
pub fn verify_hash(phc: &str, password: &[u8]) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    match Algorithm::of_phc(phc) {
        Some(Algorithm::Argon2id) => Argon2::default().verify_password(password, &hash).is_ok(),
        Some(Algorithm::Pbkdf2Sha512) => Pbkdf2.verify_password(password, &hash).is_ok(),
        None => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Cheap parameters so debug-build tests stay fast.
    pub(crate) fn cheap(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Argon2id => Hasher::argon2id(64, 1, 1).unwrap(),
            Algorithm::Pbkdf2Sha512 => Hasher::pbkdf2_sha512(1000),
        }
    }

    #[test]
    fn both_algorithms_round_trip() {
        for alg in [Algorithm::Argon2id, Algorithm::Pbkdf2Sha512] {
            let phc = cheap(alg).hash(b"s3cret").unwrap();
            assert_eq!(Algorithm::of_phc(&phc), Some(alg), "{phc}");
            assert!(phc.starts_with(&format!("${}$", alg.as_str())), "{phc}");
            assert!(verify_hash(&phc, b"s3cret"));
            assert!(!verify_hash(&phc, b"s3cret "));
            assert!(!verify_hash(&phc, b""));
        }
    }

    #[test]
    fn salts_differ() {
        let h = cheap(Algorithm::Argon2id);
        assert_ne!(h.hash(b"x").unwrap(), h.hash(b"x").unwrap());
    }

    #[test]
    fn garbage_never_verifies() {
        assert!(!verify_hash("", b""));
        assert!(!verify_hash("plaintext", b"plaintext"));
        assert!(!verify_hash(
            "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            b"x"
        ));
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!("argon2id".parse(), Ok(Algorithm::Argon2id));
        assert_eq!("pbkdf2-sha512".parse(), Ok(Algorithm::Pbkdf2Sha512));
        assert!("md5".parse::<Algorithm>().is_err());
    }
}
