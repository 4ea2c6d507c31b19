fn main() -> anyhow::Result<()> {
    anyhow::bail!("palisade-blocker is not built yet")
}
