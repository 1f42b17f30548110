"""The config: TOML text in, typed and validated frozen records out (`load`), every problem
with its file and line (`problems`, `locate`)."""
