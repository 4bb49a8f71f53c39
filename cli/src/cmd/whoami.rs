//! `zopp whoami`: the principal and user the server knows this identity as.

use crate::context::Context;
use crate::failure::CliError;
use crate::output::{Out, WhoamiJson};

/// Asks the server who this identity is.
pub async fn run(ctx: &Context, out: &Out) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let me = client.whoami().await?;
    let shadowed = ctx.shadowed_identity();
    if out.is_json() {
        return out.json(&WhoamiJson {
            principal_id: &me.principal_id,
            user_id: &me.user_id,
            email: &me.email,
            principal_name: &me.principal_name,
            server: client.server().url(),
            identity: if ctx.uses_token() { "token" } else { "home" },
            overridden_home: shadowed
                .as_ref()
                .map(|(home, _)| home.display().to_string()),
        });
    }
    let source = if ctx.uses_token() {
        match &shadowed {
            Some((home, email)) => format!(
                "identity: the service principal token in ZOPP_TOKEN; the identity in {}{} is not used while it is set",
                home.display(),
                email.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
            ),
            None => "identity: the service principal token in ZOPP_TOKEN".to_owned(),
        }
    } else {
        format!("identity: {}", ctx.home.dir().display())
    };
    let who = if me.email.is_empty() {
        me.principal_name.clone()
    } else {
        format!("{} ({})", me.email, me.principal_name)
    };
    out.line(&format!(
        "{who}\nprincipal {} on {}\n{source}",
        me.principal_id,
        client.server().url()
    ))
}
