//! Tier 3: the real Claude Code and Codex CLIs (pinned in `tests/agents`) driven by samocode,
//! against a scripted model server on 127.0.0.1. The model's tool calls run samocode's
//! scripted agent, so every iteration does real work through the real CLI's shell tool.

#[allow(dead_code)]
#[path = "e2e/fixture.rs"]
mod fixture;

mod real_cli {
    pub mod agents;
    pub mod anthropic;
    mod claude;
    mod codex;
    mod faults;
    pub mod openai;
    pub mod server;
}
