//! `zopp inject -i TEMPLATE [-o OUT]`: render any text with `${KEY}` and
//! `${zopp://project/environment/KEY}` references to the environment's secrets.
//!
//! The whole output is rendered before anything is written, so an unresolved reference is an
//! error and leaves no file (or the old file) behind; `-o` is created 0600.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use zeroize::Zeroizing;
use zopp_cli::files::write_private;
use zopp_cli::resolve::Sources;
use zopp_cli::Error;
use zopp_formats::template::MAX_RENDERED_LEN;

use crate::context::Context;
use crate::failure::CliError;
use crate::output::Out;

/// `zopp inject`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
References: ${KEY} is a secret of the environment given by -w/-p/-e, ${zopp://PROJECT/ENV/KEY}
a secret of another environment of the workspace (only with --allow-ref PROJECT/ENV), and $${
a literal ${.

Example:
  zopp inject -e prod -i config.yaml.tpl -o config.yaml")]
pub struct InjectArgs {
    /// The template, or - for stdin
    #[arg(short = 'i', long = "in", value_name = "TEMPLATE|-")]
    pub input: PathBuf,
    /// Let `${zopp://PROJECT/ENV/KEY}` references (in the template or in the secrets it uses)
    /// reach this other environment (repeatable); any other is refused
    #[arg(long = "allow-ref", value_name = "PROJECT/ENV")]
    pub allow_ref: Vec<String>,
    /// Write the result to this file (mode 0600, replaced atomically) instead of stdout
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Reads a text input (a file, or stdin for `-`), at most `max` bytes, as UTF-8.
pub fn read_text(path: &Path, max: usize) -> Result<Zeroizing<String>, CliError> {
    let stdin = path == Path::new("-");
    let shown = if stdin {
        PathBuf::from("<stdin>")
    } else {
        path.to_owned()
    };
    let reader: Box<dyn Read> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?)
    };
    let mut buf = Zeroizing::new(Vec::new());
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read", &shown, e))?;
    if buf.len() > max {
        return Err(
            Error::InvalidInput(format!("{} is larger than {max} bytes", shown.display())).into(),
        );
    }
    let text = String::from_utf8(std::mem::take(&mut *buf)).map_err(|e| {
        // Keep the bytes zeroizable: they may be secrets.
        let mut bytes = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut bytes);
        Error::InvalidInput(format!("{} is not UTF-8 text", shown.display()))
    })?;
    Ok(Zeroizing::new(text))
}

/// Runs `zopp inject`.
pub async fn run(ctx: &Context, out: &Out, a: &InjectArgs) -> Result<(), CliError> {
    let allowed = super::run::allowed_refs(&a.allow_ref)?;
    let template = read_text(&a.input, MAX_RENDERED_LEN)?;
    let env = ctx.env_ref()?;
    let client = ctx.client().await?;
    let rendered = Sources::fetch(&client, &env)
        .await?
        .allow(allowed)
        .render(&client, &template)
        .await?;
    match &a.out {
        Some(path) => Ok(write_private(path, rendered.as_bytes())?),
        None => out.bytes(rendered.as_bytes()),
    }
}
