//! Identifier newtypes. Every id is a UUID; its 16 raw bytes are what AADs and signatures bind.

use std::fmt;
use std::str::FromStr;

/// Error parsing an id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} id '{value}'")]
pub struct IdParseError {
    /// Which id type failed.
    pub kind: &'static str,
    /// The offending input (ids are not secret).
    pub value: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A fresh random id.
            pub fn random<R: rand_core::RngCore + ?Sized>(rng: &mut R) -> Self {
                let mut b = [0u8; 16];
                rng.fill_bytes(&mut b);
                Self(uuid::Builder::from_random_bytes(b).into_uuid())
            }
            /// Wraps raw bytes.
            pub const fn from_bytes(b: [u8; 16]) -> Self {
                Self(uuid::Uuid::from_bytes(b))
            }
            /// The 16 raw bytes bound into AADs and signatures.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
            /// Parses the hyphenated text form.
            pub fn try_parse(s: &str) -> Result<Self, IdParseError> {
                uuid::Uuid::parse_str(s).map(Self).map_err(|_| IdParseError {
                    kind: $kind,
                    value: s.chars().take(64).collect(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::try_parse(s)
            }
        }
    };
}

id_type!(
    /// A principal (one device of a user, or a service principal).
    PrincipalId,
    "principal"
);
id_type!(
    /// A user (a person with one or more principals).
    UserId,
    "user"
);
id_type!(
    /// A workspace.
    WorkspaceId,
    "workspace"
);
id_type!(
    /// A project inside a workspace.
    ProjectId,
    "project"
);
id_type!(
    /// An environment inside a project.
    EnvironmentId,
    "environment"
);
id_type!(
    /// An invite.
    InviteId,
    "invite"
);
id_type!(
    /// A zopp deployment (every replica over one database shares it): bound into each request
    /// signature, so a request signed for one deployment is refused by another (FORMAT.md §4).
    ServerId,
    "server"
);

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// A fixed id's text form.
    const TEXT: &str = "0190b7e4-8c5e-7cc1-9a1b-2f3e4d5c6b7a";

    #[test]
    fn text_and_bytes_round_trip() {
        let id = PrincipalId::try_parse(TEXT).expect("valid");
        assert_eq!(id.to_string(), TEXT);
        assert_eq!(PrincipalId::from_bytes(*id.as_bytes()), id);
        assert_eq!(format!("{id:?}"), format!("PrincipalId({TEXT})"));
        assert_eq!(TEXT.parse::<PrincipalId>(), Ok(id));
    }

    #[rstest]
    #[case::empty("")]
    #[case::short("0190b7e4")]
    #[case::junk("not-a-uuid-at-all-but-long-enough-to-be-one!")]
    fn invalid_ids_name_their_kind(#[case] s: &str) {
        let e = EnvironmentId::try_parse(s).expect_err("invalid");
        assert_eq!(e.kind, "environment");
        assert!(e.to_string().starts_with("invalid environment id"));
    }

    #[test]
    fn error_truncates_long_input() {
        let long = "x".repeat(10_000);
        let e = WorkspaceId::try_parse(&long).expect_err("invalid");
        assert_eq!(e.value.len(), 64);
    }

    #[test]
    fn random_ids_are_version_4() {
        let mut r =
            <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(1);
        let id = UserId::random(&mut r);
        assert_eq!(id.0.get_version_num(), 4);
    }
}
