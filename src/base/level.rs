//! Whether a level runs on this host.

/// Whether one level runs here, from the host's probe (`nebula_memory::features()`) and this build.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LevelStatus {
    /// Whether the host has what the level needs and this build contains it.
    pub available: bool,
    /// What is missing (empty when available).
    pub lacks: Vec<String>,
    /// What works only partly here (the level runs, some of its limits are refused).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limited: Vec<String>,
}

impl LevelStatus {
    /// Available unless `lacks` names something, with nothing limited yet.
    pub fn from_lacks(lacks: Vec<String>) -> LevelStatus {
        LevelStatus {
            available: lacks.is_empty(),
            lacks,
            limited: vec![],
        }
    }
}
