//! [`SecretValue`] and [`Entry`]: the plaintext a format reads or writes.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A secret's plaintext value: UTF-8 text that zeroizes on drop and never prints.
///
/// It has no `Display` and no `Serialize`; read it with [`SecretValue::expose_secret`]. `Clone`
/// exists because reference resolution hands the same value to several consumers (the child's
/// environment, the masker); every clone zeroizes independently.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps `value`, taking ownership so no unzeroized copy is left behind.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The plaintext.
    ///
    /// # Security
    /// Do not copy it into buffers that outlive their use without zeroizing them.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Moves the plaintext out into a [`Zeroizing`] string, without copying it.
    pub fn into_zeroizing(mut self) -> Zeroizing<String> {
        Zeroizing::new(std::mem::take(&mut self.0))
    }

    /// Length of the plaintext in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<Zeroizing<String>> for SecretValue {
    fn from(mut value: Zeroizing<String>) -> Self {
        // Moving the String out leaves an empty one behind, so no plaintext escapes the wrapper.
        Self(std::mem::take(&mut *value))
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

/// One named secret as a format reads or writes it. Lists of entries keep input order.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The secret's name (for example `DATABASE_URL`).
    pub name: String,
    /// The secret's value.
    pub value: SecretValue,
}

impl Entry {
    /// Builds an entry.
    pub fn new(name: impl Into<String>, value: impl Into<SecretValue>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let entry = Entry::new("API_KEY", "hunter2-canary");
        let shown = format!("{entry:?} {:?}", entry.value);
        assert!(!shown.contains("hunter2-canary"), "{shown}");
        assert!(shown.contains("API_KEY"));
    }

    #[test]
    fn from_zeroizing_moves_the_plaintext() {
        let value = SecretValue::from(Zeroizing::new(String::from("abc")));
        assert_eq!(value.expose_secret(), "abc");
        assert_eq!(value.len(), 3);
        assert!(!value.is_empty());
    }
}
