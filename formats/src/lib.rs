//! zopp's plaintext formats: reading other tools' secrets (`zopp secret import`), writing
//! files for other tools (`zopp secret export`), resolving `${…}` references between secrets
//! (`zopp run`, `zopp inject`) and masking secret values in a child's output (`zopp run --mask`).
//!
//! This crate is pure: text and bytes in, text and bytes out. It reads no file, environment
//! or clock and talks to no network; the `zopp` CLI fetches and decrypts secrets and hands the
//! plaintext here. Every value it holds is a [`SecretValue`] that zeroizes on drop and never
//! prints, every error names a key, a `file:line` or a JSON path and never a value, and output
//! buffers are sized before they are written so no reallocation leaves a copy behind.
//!
//! The exact dotenv grammar, which formats round-trip and what each target cannot hold are
//! written down in `formats/README.md`.

mod dotenv;
pub mod export;
pub mod import;
mod json;
pub mod mask;
mod name;
mod secret;
pub mod template;
mod yaml;

pub use export::{render, ExportError, ExportFormat, ExportOptions};
pub use import::{detect, parse, ImportError, ImportFormat, ImportOptions};
pub use mask::Masker;
pub use secret::{Entry, SecretValue};
pub use template::{
    render_template, resolve_each, resolve_environment, EnvironmentPath, Reference,
    RemoteEnvironments, TemplateError,
};
