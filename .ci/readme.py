"README.md from nbs/index.ipynb: markdown cells as they are, code cells fenced with their text output; `#| hide` cells dropped."
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parent.parent

def cell_markdown(cell):
    if cell.cell_type == 'markdown': return cell.source
    if cell.cell_type != 'code' or cell.source.lstrip().startswith('#| hide'): return None
    parts = ['```python\n' + '\n'.join(l for l in cell.source.splitlines() if not l.startswith('#|')) + '\n```']
    for out in cell.get('outputs', []):
        text = out.get('text') or out.get('data', {}).get('text/plain')
        if text: parts.append('```\n' + ''.join(text).rstrip() + '\n```')
    return '\n\n'.join(parts)

def main():
    nb = nbformat.read(ROOT/'nbs'/'index.ipynb', as_version=4)
    blocks = [b for b in map(cell_markdown, nb.cells) if b]
    header = '<!-- generated from nbs/index.ipynb by `make readme`; edit the notebook, not this file -->\n\n'
    (ROOT/'README.md').write_text(header + '\n\n'.join(blocks) + '\n')

if __name__ == '__main__': main()
