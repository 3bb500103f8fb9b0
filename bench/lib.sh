# Shared by the bench scripts: write_section NAME TEXT replaces (or appends) the section
# `## NAME` of bench/RESULTS.md, so each benchmark rewrites only its own figures.
write_section() {
  python3 - "$1" "$2" <<'PY'
import re, sys, pathlib
name, sec = sys.argv[1], sys.argv[2].strip() + "\n"
p = pathlib.Path("bench/RESULTS.md")
text = p.read_text() if p.exists() else "# Benchmark results\n\nEach section is rewritten by the command it names.\n"
pattern = rf"^## {re.escape(name)}\n.*?(?=^## |\Z)"
if re.search(pattern, text, flags=re.M | re.S):
    text = re.sub(pattern, lambda _: sec + "\n", text, flags=re.M | re.S)
else:
    text = text.rstrip() + "\n\n" + sec
p.write_text(text)
PY
}
