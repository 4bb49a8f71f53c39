//! Names for the ids and digests an audit entry carries, found on this machine: the server
//! stores scope ids, principal ids and secret-name digests (never a name), so `zopp audit list`
//! asks for the workspace's scopes and principals and recomputes the digest of every secret
//! name the caller can decrypt. Best effort: whatever the caller cannot list or open stays an
//! id (display only; `zopp audit verify` checks the chain, not these names).

use std::collections::HashMap;

use crate::client::Client;
use crate::scope::EnvRef;

/// Names known for one workspace's audit entries.
#[derive(Debug, Default)]
pub struct NameBook {
    /// `workspace/<id>`, `project/<id>`, `environment/<id>` → `acme`, `acme/api`, `acme/api/dev`.
    scopes: HashMap<String, String>,
    /// Hex name digest → secret name.
    secrets: HashMap<String, String>,
    /// Principal id → email (a user's device) or `name (service)`.
    principals: HashMap<String, String>,
}

impl NameBook {
    /// The name of a scope as entries spell it (`environment/<id>`), if known.
    pub fn scope(&self, scope: &str) -> Option<&str> {
        self.scopes.get(scope).map(String::as_str)
    }

    /// The secret name whose digest is `hex`, if known.
    pub fn secret(&self, hex: &str) -> Option<&str> {
        self.secrets.get(hex).map(String::as_str)
    }

    /// A label for principal `id`, if known.
    pub fn principal(&self, id: &str) -> Option<&str> {
        self.principals.get(id).map(String::as_str)
    }

    /// Remembers a principal's label (e.g. an actor's email an audit page carries).
    pub fn add_principal(&mut self, id: &str, label: &str) {
        if !id.is_empty() && !label.is_empty() {
            self.principals
                .entry(id.to_owned())
                .or_insert_with(|| label.to_owned());
        }
    }

    /// How many secret names are known (for tests and notes).
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }
}

impl Client {
    /// Collects the names of workspace `workspace`'s scopes, principals and every secret the
    /// caller can decrypt. Never fails: what cannot be read is left out.
    pub async fn name_book(&self, workspace: &str) -> NameBook {
        let mut book = NameBook::default();
        if let Ok(list) = self.list_workspaces().await {
            for w in list.iter().filter(|w| w.name == workspace) {
                book.scopes
                    .insert(format!("workspace/{}", w.id), w.name.clone());
            }
        }
        if let Ok(principals) = self.list_principals(Some(workspace)).await {
            for p in principals
                .principals
                .iter()
                .filter_map(|p| p.principal.as_ref())
            {
                let label = if p.user_email.is_empty() {
                    format!("{} (service)", p.name)
                } else {
                    p.user_email.clone()
                };
                book.add_principal(&p.principal_id, &label);
            }
        }
        let Ok(projects) = self.list_projects(workspace).await else {
            return book;
        };
        for p in projects {
            book.scopes.insert(
                format!("project/{}", p.id),
                format!("{workspace}/{}", p.name),
            );
            let Ok(envs) = self.list_environments(workspace, &p.name).await else {
                continue;
            };
            for e in envs {
                book.scopes.insert(
                    format!("environment/{}", e.id),
                    format!("{workspace}/{}/{}", p.name, e.name),
                );
                let Ok(env) = EnvRef::try_new(workspace, &p.name, &e.name) else {
                    continue;
                };
                if let Ok(fetched) = self.fetch_verified(&env).await {
                    for s in &fetched.state.secrets {
                        book.secrets
                            .insert(fetched.chain.digest(&s.name).to_hex(), s.name.clone());
                    }
                }
            }
        }
        book
    }
}
