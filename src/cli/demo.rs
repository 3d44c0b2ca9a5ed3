pub async fn demo(
    _a: DemoArgs,
    _c: &crate::config::Config,
    _s: &crate::config::Sources,
) -> Result<u8, super::CliError> {
    Ok(0)
}
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}
