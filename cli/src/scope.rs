//! Validated scope references: what `-w/-p/-e` resolve to once checked.

use std::fmt;

use zopp_proto::v1 as pb;

use crate::error::Result;
use crate::validate::{check_name, NameKind};

/// An environment named by workspace, project and environment names, each checked against the
/// naming rules.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EnvRef {
    workspace: String,
    project: String,
    environment: String,
}

impl EnvRef {
    /// Checks the three names and builds the reference.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] for the first name that breaks the rules.
    pub fn try_new(workspace: &str, project: &str, environment: &str) -> Result<Self> {
        check_name(NameKind::Workspace, workspace)?;
        check_name(NameKind::Project, project)?;
        check_name(NameKind::Environment, environment)?;
        Ok(Self {
            workspace: workspace.to_owned(),
            project: project.to_owned(),
            environment: environment.to_owned(),
        })
    }
    /// Workspace name.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }
    /// Project name.
    pub fn project(&self) -> &str {
        &self.project
    }
    /// Environment name.
    pub fn environment(&self) -> &str {
        &self.environment
    }
    /// The wire form.
    pub fn to_proto(&self) -> pb::EnvironmentRef {
        pb::EnvironmentRef {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            environment: self.environment.clone(),
        }
    }
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.workspace, self.project, self.environment
        )
    }
}

impl fmt::Debug for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvRef({self})")
    }
}
