//! Budgets and prices as configuration: the default budget of every session
//! (`SAMOCODE_MAX_COST`, `SAMOCODE_MAX_ITERATIONS`, `SAMOCODE_MAX_TIME`, or `max_cost`,
//! `max_iterations`, `max_time` in `config.toml`), the daemon's fleet budget
//! (`SAMOCODE_FLEET_MAX_COST`, `fleet_max_cost`, `supervise --fleet-max-cost`), the budget a
//! `start` or `run` gives its session (`--max-cost`, `--max-iterations`, `--max-time`), and the
//! price table that prices codex attempts (`[prices."MODEL"]`, dollars per million tokens).

use std::collections::BTreeMap;

use super::values::Layers;
use super::{ConfigError, Problems};
use crate::protocol::Usage;
use crate::protocol::budget::{
    self, Budget, COST_TEXT, ITERATIONS_TEXT, TIME_TEXT, parse_cost, parse_iterations, parse_time,
};

/// Everything about spending a command knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetSettings {
    /// The limits of a session that sets none of its own.
    pub defaults: Budget,
    /// The budget the command line gives the session it starts (`start`, `run`); kept in the
    /// session's `_state.json`.
    pub given: Budget,
    /// The most the daemon's sessions may cost together (`None`: no limit).
    pub fleet_cost_usd: Option<f64>,
    pub prices: Prices,
}

/// What one model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    /// Input read from the provider's cache; priced as `input` when not given.
    pub cached_input: Option<f64>,
    pub output: f64,
}

/// Prices by model name. The defaults cover the codex models of the default profiles and the
/// three claude families (the providers' list prices when this was written: a claude attempt
/// is priced only when it ended before printing its cost); `[prices."MODEL"]` tables add
/// models or replace them.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices(BTreeMap<String, Price>);

impl Default for Prices {
    fn default() -> Prices {
        let price = |input, cached, output| Price {
            input,
            cached_input: Some(cached),
            output,
        };
        Prices(BTreeMap::from([
            ("gpt-5.1-codex-mini".into(), price(0.25, 0.025, 2.0)),
            ("gpt-5.1-codex".into(), price(1.25, 0.125, 10.0)),
            ("gpt-5.1-codex-max".into(), price(1.25, 0.125, 10.0)),
            ("gpt-5-codex".into(), price(1.25, 0.125, 10.0)),
            ("gpt-5".into(), price(1.25, 0.125, 10.0)),
            ("opus".into(), price(5.0, 0.5, 25.0)),
            ("sonnet".into(), price(3.0, 0.3, 15.0)),
            ("haiku".into(), price(1.0, 0.1, 5.0)),
        ]))
    }
}

impl Prices {
    /// The price of `model`; a claude model's full name (`claude-sonnet-4-5-20250929`) the
    /// table does not name is priced as its family (`sonnet`).
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.0.get(model).or_else(|| {
            ["opus", "sonnet", "haiku"]
                .into_iter()
                .find(|family| model.starts_with("claude") && model.contains(family))
                .and_then(|family| self.0.get(family))
        })
    }

    /// What `usage` cost with `model`; `None` when the table has no price for it.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        let price = self.get(model)?;
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let per_million = |tokens: u64, dollars: f64| tokens as f64 * dollars / 1_000_000.0;
        Some(
            per_million(fresh, price.input)
                + per_million(cached, price.cached_input.unwrap_or(price.input))
                + per_million(usage.output_tokens, price.output),
        )
    }
}

/// The command-line flags about budgets; `None`: not given.
#[derive(Debug, Clone, Default)]
pub struct BudgetFlags {
    pub max_cost: Option<String>,
    pub max_iterations: Option<String>,
    pub max_time: Option<String>,
    pub fleet_max_cost: Option<String>,
}

const FLEET_COST: &str = "SAMOCODE_FLEET_MAX_COST";

pub(super) fn read(
    layers: &mut Layers,
    flags: &BudgetFlags,
    table: &toml::Table,
) -> BudgetSettings {
    let defaults = Budget {
        cost_usd: layers.parsed("SAMOCODE_MAX_COST", None, COST_TEXT, parse_cost),
        iterations: layers.parsed(
            "SAMOCODE_MAX_ITERATIONS",
            None,
            ITERATIONS_TEXT,
            parse_iterations,
        ),
        time_secs: layers.parsed("SAMOCODE_MAX_TIME", None, TIME_TEXT, parse_time),
    };
    // A flag is checked like the setting it stands beside, and named in its error.
    let given = Budget {
        cost_usd: flags.max_cost.as_ref().and_then(|v| {
            layers.parsed(
                "SAMOCODE_MAX_COST",
                Some(("--max-cost", v)),
                COST_TEXT,
                parse_cost,
            )
        }),
        iterations: flags.max_iterations.as_ref().and_then(|v| {
            layers.parsed(
                "SAMOCODE_MAX_ITERATIONS",
                Some(("--max-iterations", v)),
                ITERATIONS_TEXT,
                parse_iterations,
            )
        }),
        time_secs: flags.max_time.as_ref().and_then(|v| {
            layers.parsed(
                "SAMOCODE_MAX_TIME",
                Some(("--max-time", v)),
                TIME_TEXT,
                parse_time,
            )
        }),
    };
    let fleet_cost_usd = layers.parsed(
        FLEET_COST,
        flags
            .fleet_max_cost
            .as_ref()
            .map(|v| ("--fleet-max-cost", v)),
        COST_TEXT,
        parse_cost,
    );
    BudgetSettings {
        defaults,
        given,
        fleet_cost_usd,
        prices: prices_from_toml(table, layers.problems),
    }
}

/// The default prices, with `[prices."MODEL"]` tables (`input`, `output`, and optionally
/// `cached_input`, dollars per million tokens) added over them.
fn prices_from_toml(table: &toml::Table, problems: &mut Problems) -> Prices {
    let mut prices = Prices::default();
    let Some(section) = table.get("prices") else {
        return prices;
    };
    let mut bad = |key: String, value: &toml::Value, expected: &'static str| {
        problems.push(ConfigError::BadValue {
            key,
            value: super::file::shown(value),
            bare: !value.is_str(),
            origin: "config.toml",
            expected,
        });
    };
    let toml::Value::Table(models) = section else {
        bad(
            "prices".into(),
            section,
            "a table of models, such as [prices.\"gpt-5-codex\"]",
        );
        return prices;
    };
    const AMOUNT: &str = "dollars per million tokens, from 0 to 10000";
    let mut unknown = Vec::new();
    for (model, fields) in models {
        let key = format!("prices.{model}");
        // A model's name as an agent reports it: never empty.
        if model.trim().is_empty() {
            bad(
                key,
                fields,
                "a table named after a model, such as [prices.\"gpt-5-codex\"]",
            );
            continue;
        }
        let toml::Value::Table(fields) = fields else {
            bad(key, fields, "a table with input, output and cached_input");
            continue;
        };
        let mut input = None;
        let mut output = None;
        let mut cached_input = None;
        // A misspelt key is said as such, with the key it was meant to be, and a bad price as
        // that; the table is not also said to lack that one price, but still any other it lacks.
        let mut said: Vec<&str> = Vec::new();
        for (field, value) in fields {
            let key = format!("{key}.{field}");
            let amount = match value {
                toml::Value::Float(f) => Some(*f),
                toml::Value::Integer(i) => Some(*i as f64),
                _ => None,
            }
            .filter(|v| v.is_finite() && (0.0..=10_000.0).contains(v));
            let slot = match field.as_str() {
                "input" => &mut input,
                "output" => &mut output,
                "cached_input" => &mut cached_input,
                _ => {
                    const KEYS: [&str; 3] = ["input", "output", "cached_input"];
                    let nearest = super::values::nearest(field, KEYS);
                    said.extend(nearest);
                    unknown.push(ConfigError::UnknownKey {
                        place: format!("config.toml [prices.{model}]"),
                        key: field.clone(),
                        suggestion: nearest
                            .map(str::to_string)
                            .or_else(|| Some("input, output or cached_input".into())),
                    });
                    continue;
                }
            };
            match amount {
                Some(amount) => *slot = Some(amount),
                None => {
                    bad(key, value, AMOUNT);
                    said.push(field.as_str());
                }
            }
        }
        match (input, output) {
            // Input read from the cache costs at most what input costs.
            (Some(input), Some(_)) if cached_input.is_some_and(|c| c > input) => bad(
                format!("{key}.cached_input"),
                &toml::Value::Float(cached_input.unwrap_or_default()),
                "at most the input price (input read from the cache costs no more than input)",
            ),
            (Some(input), Some(output)) => {
                prices.0.insert(
                    model.clone(),
                    Price {
                        input,
                        cached_input,
                        output,
                    },
                );
            }
            _ if [("input", input), ("output", output)]
                .iter()
                .all(|(name, price)| price.is_some() || said.contains(name)) => {}
            _ => bad(
                key,
                &toml::Value::Table(fields.clone()),
                "both input and output prices",
            ),
        }
    }
    for problem in unknown {
        problems.push(problem);
    }
    prices
}

/// For the settings table of `run --dry-run`: each limit, or `none`.
pub fn describe(budget: &Budget) -> String {
    use budget::Limit;
    [Limit::Cost, Limit::Iterations, Limit::Time]
        .iter()
        .map(|l| format!("{} {}", l.word(), budget.show(*l).unwrap_or("none".into())))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_tokens_are_priced_from_the_table_with_cached_input_cheaper() {
        let prices = Prices::default();
        let usage = Usage {
            cost_usd: 0.0,
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cached_input_tokens: 400_000,
        };
        // 600k fresh at 1.25, 400k cached at 0.125, 100k out at 10.
        let cost = prices.cost("gpt-5.1-codex", &usage).unwrap();
        assert!((cost - (0.75 + 0.05 + 1.0)).abs() < 1e-9, "{cost}");
        assert_eq!(prices.cost("some-other-model", &usage), None);
    }

    #[test]
    fn a_price_table_adds_and_replaces_models_and_names_bad_entries() {
        let table: toml::Table = r#"
            [prices."gpt-5.1-codex"]
            input = 2
            output = 20.0
            [prices."my-model"]
            input = 1.0
            output = 4.0
            cached_input = 0.1
        "#
        .parse()
        .unwrap();
        let mut problems = Problems::default();
        let prices = prices_from_toml(&table, &mut problems);
        assert_eq!(problems.len(), 0);
        assert_eq!(prices.get("gpt-5.1-codex").unwrap().input, 2.0);
        assert_eq!(prices.get("gpt-5.1-codex").unwrap().cached_input, None);
        assert_eq!(prices.get("my-model").unwrap().cached_input, Some(0.1));
        assert!(prices.get("gpt-5.1-codex-mini").is_some(), "defaults stay");

        let table: toml::Table = r#"
            [prices."m"]
            input = "cheap"
            output = 1
            per_call = 3
        "#
        .parse()
        .unwrap();
        let mut problems = Problems::default();
        prices_from_toml(&table, &mut problems);
        let text = problems
            .0
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("prices.m.input=\"cheap\""), "{text}");
        assert!(!text.contains("both input and output"), "{text}");
        assert!(
            text.contains("[prices.m]: unknown setting \"per_call\""),
            "{text}"
        );
        // A table that lacks a price (and no key of it was misspelt) says so.
        let table: toml::Table = "[prices.\"n\"]\noutput = 1\n".parse().unwrap();
        let mut problems = Problems::default();
        prices_from_toml(&table, &mut problems);
        let text = problems.0[0].to_string();
        assert!(text.contains("both input and output"), "{text}");
    }
}
