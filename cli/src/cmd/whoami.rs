//! `zopp whoami`: the principal and user the server knows this identity as.

use crate::context::Context;
use crate::failure::CliError;
use crate::output::{Out, WhoamiJson};

/// Asks the server who this identity is.
pub async fn run(ctx: &Context, out: &Out) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let me = client.whoami().await?;
    if out.is_json() {
        return out.json(&WhoamiJson {
            principal_id: &me.principal_id,
            user_id: &me.user_id,
            email: &me.email,
            principal_name: &me.principal_name,
            server: client.server().url(),
        });
    }
    out.line(&format!(
        "{} ({})\nprincipal {} on {}",
        me.email,
        me.principal_name,
        me.principal_id,
        client.server().url()
    ))
}
