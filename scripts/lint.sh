#!/usr/bin/env bash
# The static checks CI runs before the tests (also the pre-commit hooks, .pre-commit-config.yaml):
#   ruff check          lint (pyflakes, pycodestyle, bugbear, async pitfalls, pyupgrade, ruff's rules)
#   ruff format --check the formatter's style, at 110 columns
#   mypy                the pure modules listed in pyproject.toml [tool.mypy]
#   lint-imports        the layering contracts in pyproject.toml [tool.importlinter]
# Uses .venv (scripts/setup.sh installs the `lint` extra). Exits non-zero on the first failing check.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VIRTUAL_ENV:-.venv}/bin
step() { printf 'lint: %s\n' "$*"; }
step "ruff check"
"$BIN/ruff" check .
step "ruff format --check"
"$BIN/ruff" format --check .
step "mypy (pure modules)"
"$BIN/mypy"
step "import contracts"
"$BIN/lint-imports"
step "all checks passed"
