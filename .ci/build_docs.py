"""Build the docs site offline: nbdev's processed notebooks (`_proc/`) rendered by Sphinx + myst-nb + furo into `_docs/`.

Quarto (what `nbdev_docs` uses) cannot be installed on the CI machines. nbdev's own processing
(`proc_nbs`: show_doc tables, directives, cross-reference links) still runs; this script adapts its
Quarto-flavoured notebooks for Sphinx and fails if a page is missing.
"""
import json, re, shutil, subprocess, sys
from configparser import ConfigParser
from pathlib import Path
import nbformat, yaml
from nbdev.serve import proc_nbs

ROOT = Path(__file__).resolve().parent.parent
cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
cfg = cfg['DEFAULT']
SITE_URL = cfg['doc_host'].rstrip('/') + cfg['doc_baseurl'].rstrip('/') + '/'
TAGS = {'echo: false': 'remove-input', 'output: false': 'remove-output', 'include: false': 'remove-cell'}

def front_matter(nb):
    "The YAML front matter nbdev puts in a notebook's first raw cell, and the notebook without it"
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.startswith('---'):
        return yaml.safe_load(nb.cells[0].source.strip().strip('-')) or {}, nb.cells[1:]
    return {}, nb.cells

def relative_links(text):
    "Links into this site made relative and pointed at the page sources (Sphinx resolves them), pandoc attributes dropped"
    text = re.sub(r'\{target="_blank"[^}]*\}', '', text.replace(SITE_URL, ''))
    return re.sub(r'\]\(([\w/-]+)\.html(#[\w-]*)?\)', lambda m: f"]({m[1]}.ipynb{m[2] or ''})", text)

def adapt_cell(cell):
    "A processed cell for myst-nb: Quarto cell options become tags, links become relative"
    for key in [k for k in cell if k not in ('cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments')]:
        del cell[key]  # nbdev's own markers (e.g. has_sd) are not notebook format
    cell.source = relative_links(cell.source)
    if cell.cell_type != 'code': return cell
    options = [l[3:].strip() for l in cell.source.splitlines() if l.startswith('#| ')]
    cell.source = '\n'.join(l for l in cell.source.splitlines() if not l.startswith('#|'))
    cell.metadata['tags'] = sorted({TAGS[o] for o in options if o in TAGS})
    for out in cell.get('outputs', []):
        for kind in ('text/markdown', 'text/html'):
            if kind in out.get('data', {}):  # show_doc output: drop its rules, which docutils cannot place
                text = relative_links(''.join(out['data'][kind]))
                out['data'][kind] = '\n'.join(l for l in text.splitlines() if l.strip() != '---')
    return cell

def adapt(src:Path, dst_dir:Path):
    "Write `src` as `dst_dir/<page>.ipynb`, named by nbdev's output-file; return the page name and title"
    nb = nbformat.read(src, as_version=4)
    meta, cells = front_matter(nb)
    page = Path(meta.get('output-file', src.stem)).stem
    title = meta.get('title', page)
    heading = f"# {title}\n\n" + (f"> {meta['description']}" if meta.get('description') else '')
    nb.cells = [nbformat.v4.new_markdown_cell(heading)] + [adapt_cell(c) for c in cells]
    nb.metadata.setdefault('kernelspec', {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'})
    nbformat.write(nb, dst_dir/f'{page}.ipynb')
    return page, title

CONF = '''
project = {title!r}
author = {author!r}
copyright = {copyright!r}
extensions = ["myst_nb"]
html_theme = "furo"
html_title = {title!r}
nb_execution_mode = "off"
nb_render_markdown_format = "myst"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
suppress_warnings = ["myst.header", "misc.highlighting_failure", "mystnb.unknown_mime_type"]
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]  # no kernel on the site: viewers show their static copy
html_static_path = {static!r}
html_css_files = ["tables.css"]
{mathjax}
'''

TABLES_CSS = """/* pandas' HTML tables: no grid, small type, scroll when wide */
table.dataframe { border-collapse: collapse; border: none; font-size: 0.8em; display: block; overflow-x: auto; }
table.dataframe th, table.dataframe td { border: none; border-bottom: 1px solid var(--color-background-border, #ddd); padding: 0.2em 0.6em; text-align: right; vertical-align: top; white-space: nowrap; }
table.dataframe thead th { border-bottom: 2px solid var(--color-foreground-border, #999); }
"""

def local_mathjax(dst:Path) -> str:
    "Install MathJax 3 from the npm registry into `dst` so that pages render math offline; '' (CDN) if npm is unavailable"
    es5 = ROOT/'_proc'/'mathjax'/'node_modules'/'mathjax'/'es5'
    if not es5.exists() and shutil.which('npm'):
        subprocess.run(['npm', 'install', '--silent', '--no-audit', '--no-fund', '--prefix', str(es5.parents[2]), 'mathjax@3'], check=False)
    if not es5.exists():
        print('docs: npm unavailable, math will load MathJax from its CDN when a page is viewed')
        return ''
    shutil.copytree(es5, dst/'mathjax', dirs_exist_ok=True)
    return 'mathjax_path = "mathjax/tex-mml-chtml.js"'

def main():
    proc = Path(proc_nbs(path=str(ROOT/'nbs'), n_workers=0, force=True))
    src = ROOT/'_proc'/'_sphinx'
    shutil.rmtree(src, ignore_errors=True); src.mkdir(parents=True)
    notebooks = sorted(p for p in proc.rglob('*.ipynb') if '_sphinx' not in p.parts)
    pages = [adapt(p, src) for p in notebooks]
    if 'index' not in [page for page, _ in pages]: sys.exit('docs: nbs/index.ipynb is missing')
    in_tutorials = {page: 'tutorials' in p.relative_to(proc).parts for p, (page, _) in zip(notebooks, pages)}
    def toctree(caption, names): return f'```{{toctree}}\n:maxdepth: 1\n:hidden:\n:caption: {caption}\n\n' + '\n'.join(names) + '\n```'
    chapters = [page for page, _ in pages if page != 'index' and not in_tutorials[page]]
    tutorials = [page for page, _ in pages if in_tutorials[page]]
    nb = nbformat.read(src/'index.ipynb', as_version=4)
    for position, (caption, names) in enumerate([('Chapters', chapters), ('Tutorials', tutorials)]):
        if names: nb.cells.insert(1 + position, nbformat.v4.new_markdown_cell(toctree(caption, names)))
    nbformat.write(nb, src/'index.ipynb')
    static = src/'_static'; static.mkdir()
    (static/'tables.css').write_text(TABLES_CSS)
    (src/'conf.py').write_text(CONF.format(title=cfg['title'], author=cfg['author'], copyright=cfg['copyright'],
                                           static=['_static'], mathjax=local_mathjax(static)))
    out = ROOT/cfg.get('doc_path', '_docs')
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', str(src), str(out)], check=True)
    missing = [page for page, _ in pages if not (out/f'{page}.html').exists()]
    if missing: sys.exit(f'docs: pages missing from {out}: {missing}')
    print(f'docs: {len(pages)} pages in {out}: ' + ', '.join(f'{page}.html' for page, _ in pages))

if __name__ == '__main__': main()
