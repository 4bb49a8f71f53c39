//! Role-based access control (DESIGN.md §5): the one [`authorize`] every handler calls.
//!
//! Roles are ordered `read < write < admin`. A grant names a scope (workspace, project or
//! environment) and covers that scope and everything below it. A user's grants apply to all of the
//! user's principals; the storage layer returns both kinds of grant for the caller, so this module
//! only sees a flat list. Nothing here does I/O: callers load the grants and pass them in, which
//! keeps the decision pure and exhaustively testable.

use std::fmt;

use zopp_crypto::ids::{EnvironmentId, ProjectId, WorkspaceId};

/// A role, ordered by power: `Read < Write < Admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// List, get, history, export, run, preview.
    Read,
    /// Read, plus set, delete, import, rollback, apply.
    Write,
    /// Write, plus manage projects, environments, access and the audit trail.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    /// The number stored in the database and sent on the wire (`zopp.v1.Role`).
    pub fn as_i32(self) -> i32 {
        match self {
            Role::Read => 1,
            Role::Write => 2,
            Role::Admin => 3,
        }
    }

    /// Parses the stored or wire number; `None` for anything else (including unspecified).
    pub fn try_from_i32(v: i32) -> Option<Role> {
        match v {
            1 => Some(Role::Read),
            2 => Some(Role::Write),
            3 => Some(Role::Admin),
            _ => None,
        }
    }

    /// Lowercase name, as users type it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an action applies. Project and environment scopes carry their ancestors' ids so that
/// "covers" is a pure comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The server itself (joining, creating workspaces, the server audit chain).
    Server,
    /// A workspace.
    Workspace(WorkspaceId),
    /// A project inside a workspace.
    Project(WorkspaceId, ProjectId),
    /// An environment inside a project.
    Environment(WorkspaceId, ProjectId, EnvironmentId),
}

impl Scope {
    /// The workspace this scope lives in (`None` for the server).
    pub fn workspace(&self) -> Option<WorkspaceId> {
        match *self {
            Scope::Server => None,
            Scope::Workspace(w) | Scope::Project(w, _) | Scope::Environment(w, _, _) => Some(w),
        }
    }

    /// Whether `self` is `other` or one of its ancestors. The server scope covers nothing: no
    /// grant is ever made at server level.
    pub fn covers(&self, other: &Scope) -> bool {
        match (*self, *other) {
            (Scope::Server, _) | (_, Scope::Server) => false,
            (Scope::Workspace(w), o) => o.workspace() == Some(w),
            (Scope::Project(w, p), Scope::Project(w2, p2))
            | (Scope::Project(w, p), Scope::Environment(w2, p2, _)) => w == w2 && p == p2,
            (Scope::Project(..), Scope::Workspace(_)) => false,
            (Scope::Environment(w, p, e), Scope::Environment(w2, p2, e2)) => {
                w == w2 && p == p2 && e == e2
            }
            (Scope::Environment(..), _) => false,
        }
    }

    /// The audit-trail label: `server`, `workspace/<id>`, `project/<id>` or `environment/<id>`.
    pub fn label(&self) -> String {
        match self {
            Scope::Server => "server".to_string(),
            Scope::Workspace(w) => format!("workspace/{w}"),
            Scope::Project(_, p) => format!("project/{p}"),
            Scope::Environment(_, _, e) => format!("environment/{e}"),
        }
    }
}

/// One live grant held by the caller (directly or through its user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Granted scope (never [`Scope::Server`]).
    pub scope: Scope,
    /// Granted role.
    pub role: Role,
}

/// What kind of principal is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A device of a person.
    User,
    /// A workspace's service principal (CI).
    Service,
}

/// The caller as RBAC sees it: its kind and every live grant it holds in the relevant workspace.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// User device or service principal.
    pub kind: PrincipalKind,
    /// Live grants (the principal's own and its user's).
    pub grants: &'a [Grant],
}

/// Things a caller may try to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// See that a scope exists (list it, resolve it by name).
    View,
    /// Read secrets: get, list, history, fetch, watch, and the keys to decrypt them.
    ReadSecrets,
    /// Append secret versions: set, delete, import, rollback.
    WriteSecrets,
    /// Create or delete projects and environments (and delete workspaces); set an
    /// environment's retention limit.
    ManageScopes,
    /// Grant and revoke access, create invites and service principals, rotate keys.
    ManageAccess,
    /// Read the audit trail of a workspace (or of the server).
    ReadAudit,
    /// Create a new workspace (server scope).
    CreateWorkspace,
    /// Give this role at the scope to someone else: a grant, a workspace invite or a service
    /// principal. Needs the admin role there and, so that nobody can hand out more than they
    /// hold, a role at least as strong as the one given (DESIGN.md §5, no escalation).
    Grant(Role),
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 10] = [
        Action::View,
        Action::ReadSecrets,
        Action::WriteSecrets,
        Action::ManageScopes,
        Action::ManageAccess,
        Action::ReadAudit,
        Action::CreateWorkspace,
        Action::Grant(Role::Read),
        Action::Grant(Role::Write),
        Action::Grant(Role::Admin),
    ];

    /// The weakest role that allows this action on a covered scope.
    pub fn required_role(self) -> Role {
        match self {
            Action::View | Action::ReadSecrets => Role::Read,
            Action::WriteSecrets => Role::Write,
            Action::ManageScopes
            | Action::ManageAccess
            | Action::ReadAudit
            | Action::CreateWorkspace => Role::Admin,
            // Granting is managing access, and the role given may not exceed the giver's.
            Action::Grant(given) => given.max(Role::Admin),
        }
    }
}

/// Why [`authorize`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The caller holds nothing at, above or below the scope: it must not learn that the scope
    /// exists, so handlers answer exactly as for a missing one (NOT_FOUND).
    Hidden,
    /// The caller can see the scope but its role there is too weak.
    Forbidden {
        /// The role the action needs.
        required: Role,
        /// The caller's effective role on the scope (`None`: it only sees the scope because it
        /// holds a grant further down).
        held: Option<Role>,
    },
    /// The action is not available to this kind of principal or at this scope at all.
    NotAllowed(&'static str),
}

/// The caller's effective role on `scope`: the strongest grant covering it.
pub fn effective_role(grants: &[Grant], scope: &Scope) -> Option<Role> {
    grants
        .iter()
        .filter(|g| g.scope.covers(scope))
        .map(|g| g.role)
        .max()
}

/// Whether the caller can see `scope`: a grant covers it, or a grant lies somewhere below it
/// (an environment grantee sees its project and workspace by name, never their siblings).
pub fn visible(grants: &[Grant], scope: &Scope) -> bool {
    grants
        .iter()
        .any(|g| g.scope.covers(scope) || scope.covers(&g.scope))
}

/// Decides whether `subject` may perform `action` on `scope`.
///
/// Returns the caller's effective role on the scope (`None` for server-scope actions, or for
/// [`Action::View`] of a scope the caller sees only through a grant below it).
///
/// # Errors
/// [`Denied::Hidden`] when the caller must not learn the scope exists, [`Denied::Forbidden`] when
/// its role is too weak, [`Denied::NotAllowed`] when the action does not apply.
pub fn authorize(
    subject: &Subject<'_>,
    action: Action,
    scope: &Scope,
) -> Result<Option<Role>, Denied> {
    if let Scope::Server = scope {
        return match (action, subject.kind) {
            (Action::CreateWorkspace | Action::ReadAudit | Action::View, PrincipalKind::User) => {
                Ok(None)
            }
            (
                Action::CreateWorkspace | Action::ReadAudit | Action::View,
                PrincipalKind::Service,
            ) => Err(Denied::NotAllowed(
                "service principals cannot act at server level",
            )),
            _ => Err(Denied::NotAllowed("this action needs a workspace scope")),
        };
    }
    if action == Action::CreateWorkspace {
        return Err(Denied::NotAllowed("workspaces are created at server level"));
    }
    let held = effective_role(subject.grants, scope);
    if held.is_none() && !visible(subject.grants, scope) {
        return Err(Denied::Hidden);
    }
    if action == Action::View {
        return Ok(held);
    }
    let required = action.required_role();
    match held {
        Some(role) if role >= required => match action {
            // The no-escalation rule, stated on its own so that it holds even if granting
            // ever stops needing the admin role: nobody gives a role stronger than their own.
            Action::Grant(given) if given > role => Err(Denied::Forbidden {
                required: given,
                held,
            }),
            _ => Ok(Some(role)),
        },
        _ => Err(Denied::Forbidden { required, held }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W1: WorkspaceId = WorkspaceId::from_bytes([1; 16]);
    const W2: WorkspaceId = WorkspaceId::from_bytes([2; 16]);
    const P1: ProjectId = ProjectId::from_bytes([11; 16]);
    const P2: ProjectId = ProjectId::from_bytes([12; 16]);
    const P3: ProjectId = ProjectId::from_bytes([13; 16]);
    const E1: EnvironmentId = EnvironmentId::from_bytes([21; 16]);
    const E2: EnvironmentId = EnvironmentId::from_bytes([22; 16]);
    const E3: EnvironmentId = EnvironmentId::from_bytes([23; 16]);

    /// W1 ⊃ P1 ⊃ {E1, E2}; W1 ⊃ P2 ⊃ E3; W2 ⊃ P3 (another workspace).
    fn all_scopes() -> Vec<Scope> {
        vec![
            Scope::Workspace(W1),
            Scope::Project(W1, P1),
            Scope::Project(W1, P2),
            Scope::Environment(W1, P1, E1),
            Scope::Environment(W1, P1, E2),
            Scope::Environment(W1, P2, E3),
            Scope::Workspace(W2),
            Scope::Project(W2, P3),
        ]
    }

    /// Independent statement of the hierarchy: the chain of ancestors of each scope, itself
    /// included, written out by hand rather than derived from `covers`.
    fn ancestors(s: &Scope) -> Vec<Scope> {
        match *s {
            Scope::Server => vec![],
            Scope::Workspace(w) => vec![Scope::Workspace(w)],
            Scope::Project(w, p) => vec![Scope::Workspace(w), Scope::Project(w, p)],
            Scope::Environment(w, p, e) => vec![
                Scope::Workspace(w),
                Scope::Project(w, p),
                Scope::Environment(w, p, e),
            ],
        }
    }

    /// DESIGN.md §5's table, written out again rather than calling `required_role`: reading
    /// needs read, writing needs write, everything else (managing scopes, access and the audit
    /// trail, and granting any role) needs admin.
    fn min_role(a: Action) -> Role {
        match a {
            Action::View | Action::ReadSecrets => Role::Read,
            Action::WriteSecrets => Role::Write,
            _ => Role::Admin,
        }
    }

    /// Every single-grant combination: role × grant scope × target scope × action, for both
    /// principal kinds, against the rules of DESIGN.md §5 written out longhand.
    #[test]
    fn matrix_single_grant() {
        let mut checked = 0;
        for kind in [PrincipalKind::User, PrincipalKind::Service] {
            for role in Role::ALL {
                for grant_scope in all_scopes() {
                    let grants = [Grant {
                        scope: grant_scope,
                        role,
                    }];
                    let subject = Subject {
                        kind,
                        grants: &grants,
                    };
                    for target in all_scopes() {
                        let covered = ancestors(&target).contains(&grant_scope);
                        let below = ancestors(&grant_scope).contains(&target);
                        for action in Action::ALL {
                            let got = authorize(&subject, action, &target);
                            let expected = if action == Action::CreateWorkspace {
                                Err(Denied::NotAllowed("workspaces are created at server level"))
                            } else if covered {
                                if action == Action::View || role >= min_role(action) {
                                    Ok(Some(role))
                                } else {
                                    Err(Denied::Forbidden {
                                        required: min_role(action),
                                        held: Some(role),
                                    })
                                }
                            } else if below {
                                if action == Action::View {
                                    Ok(None)
                                } else {
                                    Err(Denied::Forbidden {
                                        required: min_role(action),
                                        held: None,
                                    })
                                }
                            } else {
                                Err(Denied::Hidden)
                            };
                            assert_eq!(
                                got, expected,
                                "{kind:?} {role} at {grant_scope:?}, {action:?} on {target:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 3 * 8 * 8 * 10);
    }

    /// The no-escalation rule of DESIGN.md §5 for every role a caller can hold at a scope and
    /// every role it might try to give there, at, above and beside its grant.
    #[test]
    fn nobody_grants_more_than_they_hold() {
        let prod = Scope::Environment(W1, P1, E1);
        let sibling = Scope::Environment(W1, P1, E2);
        let project = Scope::Project(W1, P1);
        for held in Role::ALL {
            let grants = [Grant {
                scope: prod,
                role: held,
            }];
            for kind in [PrincipalKind::User, PrincipalKind::Service] {
                let s = Subject {
                    kind,
                    grants: &grants,
                };
                for given in Role::ALL {
                    let got = authorize(&s, Action::Grant(given), &prod);
                    if held == Role::Admin {
                        assert_eq!(got, Ok(Some(Role::Admin)), "{held} gives {given}");
                    } else {
                        assert_eq!(
                            got,
                            Err(Denied::Forbidden {
                                required: Role::Admin,
                                held: Some(held)
                            }),
                            "{held} gives {given}"
                        );
                    }
                    // Never beside or above the grant, whatever the role.
                    assert_eq!(
                        authorize(&s, Action::Grant(given), &sibling),
                        Err(Denied::Hidden)
                    );
                    assert_eq!(
                        authorize(&s, Action::Grant(given), &project),
                        Err(Denied::Forbidden {
                            required: Role::Admin,
                            held: None
                        })
                    );
                }
            }
        }
    }

    /// The escalation cases of issue #3: a principal that may only read `prod` tries to give
    /// write on `prod` (a grant or a write service principal), to grant on a sibling environment
    /// and on the project. Every one is refused, naming the admin role it would need.
    #[test]
    fn prod_reader_cannot_escalate() {
        let grants = [Grant {
            scope: Scope::Environment(W1, P1, E1),
            role: Role::Read,
        }];
        let s = Subject {
            kind: PrincipalKind::User,
            grants: &grants,
        };
        for given in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(
                authorize(&s, Action::Grant(given), &Scope::Environment(W1, P1, E1)),
                Err(Denied::Forbidden {
                    required: Role::Admin,
                    held: Some(Role::Read)
                })
            );
        }
        assert_eq!(
            authorize(&s, Action::Grant(Role::Write), &Scope::Project(W1, P1)),
            Err(Denied::Forbidden {
                required: Role::Admin,
                held: None
            })
        );
        assert_eq!(
            authorize(&s, Action::ManageAccess, &Scope::Environment(W1, P1, E1)),
            Err(Denied::Forbidden {
                required: Role::Admin,
                held: Some(Role::Read)
            })
        );
    }

    #[test]
    fn sibling_environment_is_hidden_even_to_admins() {
        let grants = [Grant {
            scope: Scope::Environment(W1, P1, E1),
            role: Role::Admin,
        }];
        let s = Subject {
            kind: PrincipalKind::User,
            grants: &grants,
        };
        for action in Action::ALL {
            if action == Action::CreateWorkspace {
                continue;
            }
            assert_eq!(
                authorize(&s, action, &Scope::Environment(W1, P1, E2)),
                Err(Denied::Hidden),
                "{action:?}"
            );
        }
        // Its own project is visible, but grants no rights on the project itself.
        assert_eq!(
            authorize(&s, Action::View, &Scope::Project(W1, P1)),
            Ok(None)
        );
        assert_eq!(
            authorize(&s, Action::ManageScopes, &Scope::Project(W1, P1)),
            Err(Denied::Forbidden {
                required: Role::Admin,
                held: None
            })
        );
    }

    #[test]
    fn strongest_covering_grant_wins() {
        let grants = [
            Grant {
                scope: Scope::Workspace(W1),
                role: Role::Read,
            },
            Grant {
                scope: Scope::Project(W1, P1),
                role: Role::Write,
            },
            Grant {
                scope: Scope::Environment(W1, P1, E1),
                role: Role::Admin,
            },
        ];
        let s = Subject {
            kind: PrincipalKind::User,
            grants: &grants,
        };
        let e1 = Scope::Environment(W1, P1, E1);
        let e2 = Scope::Environment(W1, P1, E2);
        let e3 = Scope::Environment(W1, P2, E3);
        assert_eq!(
            authorize(&s, Action::ManageAccess, &e1),
            Ok(Some(Role::Admin))
        );
        assert_eq!(
            authorize(&s, Action::WriteSecrets, &e2),
            Ok(Some(Role::Write))
        );
        assert_eq!(
            authorize(&s, Action::WriteSecrets, &e3),
            Err(Denied::Forbidden {
                required: Role::Write,
                held: Some(Role::Read)
            })
        );
        assert_eq!(
            authorize(&s, Action::ReadSecrets, &e3),
            Ok(Some(Role::Read))
        );
    }

    #[test]
    fn server_scope_depends_only_on_principal_kind() {
        let none: [Grant; 0] = [];
        let user = Subject {
            kind: PrincipalKind::User,
            grants: &none,
        };
        let service = Subject {
            kind: PrincipalKind::Service,
            grants: &none,
        };
        for action in Action::ALL {
            let u = authorize(&user, action, &Scope::Server);
            let s = authorize(&service, action, &Scope::Server);
            match action {
                Action::CreateWorkspace | Action::ReadAudit | Action::View => {
                    assert_eq!(u, Ok(None), "{action:?}");
                    assert!(matches!(s, Err(Denied::NotAllowed(_))), "{action:?}");
                }
                _ => {
                    assert!(matches!(u, Err(Denied::NotAllowed(_))), "{action:?}");
                    assert!(matches!(s, Err(Denied::NotAllowed(_))), "{action:?}");
                }
            }
        }
    }

    #[test]
    fn no_grants_hides_everything() {
        let none: [Grant; 0] = [];
        let s = Subject {
            kind: PrincipalKind::User,
            grants: &none,
        };
        for target in all_scopes() {
            for action in Action::ALL {
                if action == Action::CreateWorkspace {
                    continue;
                }
                assert_eq!(authorize(&s, action, &target), Err(Denied::Hidden));
            }
        }
    }

    #[test]
    fn role_numbers_round_trip_and_reject_unspecified() {
        for r in Role::ALL {
            assert_eq!(Role::try_from_i32(r.as_i32()), Some(r));
        }
        assert_eq!(Role::try_from_i32(0), None);
        assert_eq!(Role::try_from_i32(4), None);
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    }
}
