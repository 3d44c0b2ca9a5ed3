//! Model profiles as configuration: what `light`, `standard`, `strong` and `max` mean for each
//! provider (a model and a reasoning effort), the `[profiles.<provider>.<profile>]` tables of
//! `config.toml` that override the defaults, and the choice of model for one attempt.

use super::{AgentSettings, ConfigError, Problems, Provider};
use crate::protocol::Profile;

/// What one profile means for one provider: a model and a reasoning effort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub model: String,
    pub effort: String,
}

/// The model and effort of every profile, per provider. The defaults are sensible for each CLI;
/// `config.toml` overrides any of them, e.g. `[profiles.claude.strong] model = "opus"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelProfiles {
    /// Indexed by the profile's position in [`Profile::ALL`].
    claude: [ModelSpec; 4],
    codex: [ModelSpec; 4],
}

/// The reasoning efforts a profile may name (codex's `model_reasoning_effort` words).
pub const EFFORTS: &[&str] = &["minimal", "low", "medium", "high", "xhigh"];

impl Default for ModelProfiles {
    fn default() -> Self {
        let spec = |model: &str, effort: &str| ModelSpec {
            model: model.into(),
            effort: effort.into(),
        };
        ModelProfiles {
            claude: [
                spec("haiku", "low"),
                spec("sonnet", "medium"),
                spec("opus", "high"),
                spec("opus", "xhigh"),
            ],
            codex: [
                spec("gpt-5.1-codex-mini", "low"),
                spec("gpt-5.1-codex", "medium"),
                spec("gpt-5.1-codex-max", "high"),
                spec("gpt-5.1-codex-max", "xhigh"),
            ],
        }
    }
}

impl ModelProfiles {
    pub fn get(&self, provider: Provider, profile: Profile) -> &ModelSpec {
        &self.table(provider)[profile as usize]
    }

    fn table(&self, provider: Provider) -> &[ModelSpec; 4] {
        match provider {
            Provider::Claude => &self.claude,
            Provider::Codex => &self.codex,
        }
    }

    fn table_mut(&mut self, provider: Provider) -> &mut [ModelSpec; 4] {
        match provider {
            Provider::Claude => &mut self.claude,
            Provider::Codex => &mut self.codex,
        }
    }
}

/// The model of one attempt, as its profile and the explicit model settings decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    pub profile: Profile,
    pub model: String,
    pub effort: String,
    /// CLAUDE_MODEL (or CODEX_MODEL) named the model, overriding the profile's.
    pub explicit: bool,
}

impl AgentSettings {
    /// The model and effort of an attempt run with `profile`: the profile's, except that an
    /// explicit CLAUDE_MODEL or CODEX_MODEL still names the model.
    pub fn choose(&self, profile: Profile) -> ModelChoice {
        let spec = self.profiles.get(self.provider, profile);
        let explicit = match self.provider {
            Provider::Claude => self.claude_model.as_ref(),
            Provider::Codex => self.codex_model.as_ref(),
        };
        ModelChoice {
            profile,
            model: explicit.unwrap_or(&spec.model).clone(),
            effort: spec.effort.clone(),
            explicit: explicit.is_some(),
        }
    }

    /// The settings of one attempt: the provider's model is the chosen one, and so is the effort.
    pub fn for_attempt(&self, choice: &ModelChoice) -> AgentSettings {
        let mut settings = self.clone();
        match self.provider {
            Provider::Claude => settings.claude_model = Some(choice.model.clone()),
            Provider::Codex => settings.codex_model = Some(choice.model.clone()),
        }
        settings.effort = Some(choice.effort.clone());
        settings
    }
}

/// The defaults, overridden by `[profiles.<provider>.<profile>]` tables with `model` and
/// `effort` keys; anything else under `profiles` is a problem naming its key.
pub(super) fn from_toml(table: &toml::Table, problems: &mut Problems) -> ModelProfiles {
    let mut profiles = ModelProfiles::default();
    let Some(section) = table.get("profiles") else {
        return profiles;
    };
    let mut bad = |key: String, value: &toml::Value, expected: &'static str| {
        problems.push(ConfigError::BadValue {
            key,
            value: super::file::shown(value),
            bare: !value.is_str(),
            origin: "config.toml",
            expected,
        })
    };
    let toml::Value::Table(providers) = section else {
        bad(
            "profiles".into(),
            section,
            "a table of providers (claude, codex)",
        );
        return profiles;
    };
    for (provider_name, per_provider) in providers {
        let key = format!("profiles.{provider_name}");
        let provider = match provider_name.as_str() {
            "claude" => Provider::Claude,
            "codex" => Provider::Codex,
            _ => {
                bad(key, per_provider, "a provider: claude or codex");
                continue;
            }
        };
        let toml::Value::Table(per_profile) = per_provider else {
            bad(
                key,
                per_provider,
                "a table of profiles (light, standard, strong, max)",
            );
            continue;
        };
        for (profile_name, spec) in per_profile {
            let key = format!("{key}.{profile_name}");
            let Ok(profile) = profile_name.parse::<Profile>() else {
                bad(key, spec, "a profile: light, standard, strong or max");
                continue;
            };
            let toml::Value::Table(fields) = spec else {
                bad(key, spec, "a table with model and effort");
                continue;
            };
            let slot = &mut profiles.table_mut(provider)[profile as usize];
            for (field, value) in fields {
                let key = format!("{key}.{field}");
                let text = value.as_str().map(str::trim).unwrap_or_default();
                match field.as_str() {
                    "model" if super::model_name(text).is_some() => slot.model = text.to_string(),
                    "model" => bad(key, value, super::MODEL_NAME),
                    "effort" if EFFORTS.contains(&text) => slot.effort = text.to_string(),
                    "effort" => bad(key, value, "minimal, low, medium, high or xhigh"),
                    _ => bad(key, value, "only model and effort keys"),
                }
            }
        }
    }
    profiles
}
