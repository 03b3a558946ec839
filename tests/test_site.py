"""The teaching site (docs/site.py): each diff page is a true diff of the two paper parts, every citation on a
changed line is a tag linked to its paper, nothing below the fence appears, every page parses and every link
resolves, the drawn examples are what each script's get_batch returns, two builds give the same bytes, and the
pages load in a real browser (headless Chromium) without errors or horizontal overflow."""

import html.parser
import importlib.util
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from test_citations import citations as cited_in
from test_shared_code import definitions, split_at_fence

spec = importlib.util.spec_from_file_location("site_builder", ROOT / "docs" / "site.py")
site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(site)
PAGES = ["index"] + [f"diff-{a}-{b}" for a, b in site.DIFFS] + site.SCRIPTS
VOID = {"meta", "link", "col", "br", "img", "hr", "input"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The site, built once (its data prepared in a folder of its own); and the bytes of a second build."""
    out, data = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("site-data")
    site.build(out, data)
    first = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    site.build(out, data)
    return out, data, first


class Page(html.parser.HTMLParser):
    """A page read as a tree of what the tests need: elements with their attributes and text, ids, links; and
    whether every element closes where it should."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.stack, self.elements, self.errors = [], [], []
        self.feed(text)
        self.close()
        self.errors += [f"<{e['tag']}> never closed" for e in self.stack]

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": [], "parents": list(self.stack),
                   "up": {id(e) for e in self.stack}}
        self.elements.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1]["tag"] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1]['tag'] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        for element in self.stack:
            element["text"].append(data)

    def find(self, tag=None, cls=None, **attrs):
        return [e for e in self.elements if (tag is None or e["tag"] == tag)
                and (cls is None or cls in e["attrs"].get("class", "").split())
                and all(e["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items())]


def text(element):
    return "".join(element["text"])


def read(out, name):
    return Page((out / f"{name}.html").read_text())


def lines_of(script):
    return split_at_fence((ROOT / f"{script}.py").read_text(), script)[0].splitlines()


def span(value):
    first, last = map(int, value.split("-"))
    return range(first, last + 1)


@pytest.mark.parametrize("a, b", site.DIFFS)
def test_each_diff_page_is_a_true_diff_of_the_two_paper_parts(built, a, b):
    """Every line of each paper part lies in exactly one definition shown; within a definition in both, the lines
    left when the removed ones are taken from a and the added ones from b are the same, in order; a definition in
    one script only is removed or added whole; each changed line shows the script's own line."""
    page = read(built[0], f"diff-{a}-{b}")
    assert not page.errors
    la, lb = lines_of(a), lines_of(b)
    units = page.find(cls="unit") + page.find(cls="same-unit")
    covered = {"a": [], "b": []}
    for unit in units:
        ranges = {side: span(unit["attrs"]["data-" + side]) if unit["attrs"]["data-" + side] else range(0)
                  for side in ("a", "b")}
        for side in ranges:
            covered[side] += list(ranges[side])
        cells = [e for e in page.elements if e["tag"] == "td" and id(unit) in e["up"]]
        changed = {side: {int(c["attrs"]["data-line"]) for c in cells
                          if c["attrs"].get("class") == f"{side} {'del' if side == 'a' else 'ins'}"}
                   for side in ("a", "b")}
        for c in cells:  # a shown line is the script's line, at its number
            cls = c["attrs"].get("class", "").split()
            if cls and cls[0] in ("a", "b") and "none" not in cls:
                line = int(c["attrs"]["data-line"])
                assert line in ranges[cls[0]], f"{unit['attrs']['data-name']}: line {line} outside it"
                assert text(c) == (la if cls[0] == "a" else lb)[line - 1]
        kept = {side: [(la if side == "a" else lb)[i - 1] for i in ranges[side]
                       if i not in changed[side] and (la if side == "a" else lb)[i - 1].strip()]
                for side in ("a", "b")}
        if ranges["a"] and ranges["b"]:
            assert kept["a"] == kept["b"], f"{unit['attrs']['data-name']}: the unchanged lines differ"
        else:
            assert not kept["a"] and not kept["b"], f"{unit['attrs']['data-name']} is not shown whole"
    for side, lines in (("a", la), ("b", lb)):
        content = [i for i, line in enumerate(lines, 1) if line.strip() and not line.startswith("# --- ")]
        assert sorted(covered[side]) == sorted(set(covered[side])), f"a line of {side} in two definitions"
        assert set(content) <= set(covered[side]), f"lines of {side} in no definition: " \
            f"{sorted(set(content) - set(covered[side]))[:5]}"


def normal(tag_text):
    """A tag's citation as tests/test_citations.py reads one: (paper, (kind, number))."""
    paper, what = tag_text.split(" ", 1)
    if what.startswith(("Table ", "Figure ")):
        kind, number = what.split(" ")
        return paper, (kind.lower(), number)
    return paper, ("section", what.removeprefix("Appendix ").removeprefix("§").strip())


@pytest.mark.parametrize("a, b", site.DIFFS)
def test_every_citation_on_a_changed_line_is_a_tag_linked_to_its_paper(built, a, b):
    page = read(built[0], f"diff-{a}-{b}")
    url = {paper: site.PAPERS[script][1] for script, (paper, _, _) in site.PAPERS.items()}
    hunks = page.find("details", cls="hunk")
    assert hunks
    for hunk in hunks:
        cells = [e for e in page.elements if e["tag"] == "td" and id(hunk) in e["up"]]
        wanted = {c for cell in cells if cell["attrs"].get("class") in ("a del", "b ins")
                  for c in cited_in(text(cell), a if cell["attrs"]["class"] == "a del" else b)}
        tags = [e for e in page.elements if e["tag"] == "a" and "tag" in e["attrs"].get("class", "").split()
                and id(hunk) in e["up"]]
        assert {normal(text(t)) for t in tags} == wanted, hunk["attrs"]["id"]
        for t in tags:
            assert t["attrs"]["href"] == url[text(t).split(" ")[0]]
        kinds = [text(e) for e in page.elements if "tag" in e["attrs"].get("class", "").split()
                 and e["tag"] == "span" and id(hunk) in e["up"]]
        assert kinds and set(kinds) <= set(site.KINDS)
        assert ("open" in hunk["attrs"]) == (kinds != ["checkpoint layout"])  # checkpoint hunks start folded


def test_no_fenced_definition_appears_on_any_page(built):
    plumbing = definitions(split_at_fence((ROOT / "gpt.py").read_text())[1])
    defs = [n for n in plumbing if re.match(r"\w+$", n)]
    assert "train" in defs and "cached" in defs
    for name in PAGES:
        body = text(read(built[0], name).find("body")[0])
        shown = [d for d in defs if re.search(rf"\b(def|class) {d}\b", body)]
        assert not shown, f"{name}.html shows fenced definitions: {shown}"
        assert "shared plumbing: identical in every script" not in body


def test_every_page_parses_and_every_link_resolves(built):
    out = built[0]
    external = {u for _, paper, release in site.PAPERS.values() for u in (paper, release)}
    ids_of = {}  # page file -> its ids
    for name in PAGES:
        page = read(out, name)
        assert not page.errors, f"{name}.html: {page.errors[:3]}"
        ids = [e["attrs"]["id"] for e in page.elements if "id" in e["attrs"]]
        assert len(ids) == len(set(ids)), f"{name}.html: an id twice"
        for e in page.elements:
            target = e["attrs"].get("href") or e["attrs"].get("src")
            if target is None:
                continue
            if target.startswith(("http:", "https:")):
                assert target in external, f"{name}.html links {target}, not in site.PAPERS"
                continue
            path, _, anchor = target.partition("#")
            file = (out / path).resolve() if path else out / f"{name}.html"
            assert file.exists(), f"{name}.html: {target} does not exist"
            if anchor and file.suffix == ".html":
                if file not in ids_of:
                    ids_of[file] = {x["attrs"].get("id") for x in Page(file.read_text()).elements}
                assert anchor in ids_of[file], \
                    f"{name}.html: no #{anchor} in {path or 'itself'}"
            elif anchor:  # a Markdown file of the repository: one of its headings
                assert anchor in {site.slug(h) for h in re.findall(r"^#+ (.*)", file.read_text(), re.M)}
    index = text(read(out, "index").find("body")[0])
    for script in site.SCRIPTS:  # the pinned versions, as the docstrings say
        doc = (ROOT / f"{script}.py").read_text()[:600]
        pin = re.search(r"arXiv (\d{4}\.\d{5}v\d)", doc)
        assert pin is None or site.PAPERS[script][1] == f"https://arxiv.org/abs/{pin.group(1)}"
        assert site.about(script)[0] in index


def test_the_pages_hold_what_a_teacher_needs(built):
    out = built[0]
    page = read(out, "diff-bert-electra")
    hunks = page.find("details", cls="hunk")
    for i, hunk in enumerate(hunks, 1):  # previous / next links in order
        links = [e["attrs"]["href"] for e in page.elements if e["tag"] == "a" and id(hunk) in e["up"]
                 and "pn" in "".join(p["attrs"].get("class", "") for p in e["parents"])]
        assert links == [f"#h{j}" for j in (i - 1, i + 1) if 1 <= j <= len(hunks)]
    sections = [e["attrs"]["id"] for e in page.find("section")]
    assert sections == ["s-docstring", "s-config", "s-model", "s-objective", "s-tokenizer", "s-fine-tuning",
                        "s-demo", "s-checkpoints"]
    for section in page.find("section"):  # the walkthrough's paragraph leads each section with changes
        inside = [e for e in page.elements if id(section) in e["up"]]
        if any(e["attrs"].get("class") == "unit" for e in inside):
            assert any(e["attrs"].get("class") == "prose" for e in inside), section["attrs"]["id"]
    objective = page.find("section", id="s-objective")[0]
    assert "sample_replacements" in text(objective) and "Gumbel" in text(objective)
    bert = read(out, "bert")
    assert bert.find(id="mask_tokens") and bert.find(id="L285")
    fence = bert.find("p", cls="fence")[0]
    total = len((ROOT / "bert.py").read_text().splitlines())
    assert text(fence).startswith(f"{total - len(lines_of('bert'))} lines of shared plumbing")
    css = (out / "style.css").read_text()
    assert "@media print" in css and "@media (max-width" in css


def chips(page):
    """{(script, example id): [the chips' data attributes]} of a script page's drawing."""
    rows = {}
    for row in page.find("div", cls="chips"):
        rows[row["attrs"]["data-script"], int(row["attrs"]["data-example"])] = [
            {k[5:]: v for k, v in e["attrs"].items() if k.startswith("data-")}
            for e in page.elements if e["tag"] == "span" and id(row) in e["up"]
            and "chip" in e["attrs"].get("class", "").split()]
    return rows


def batch_of(script, data_dir, ids):
    module = importlib.import_module(script)
    cfg = module.PRESETS["tiny"]
    tokenizer = module.load_tokenizer(data_dir / script)
    data = module.load_data(module.read_corpus(None), tokenizer, data_dir / script, cfg)["train"]
    return module.get_batch(data, ids, 0, cfg), data, module


def check_masked(drawn, batch, r, mask_id):
    """A drawn row against get_batch's row r: ids, originals, segments, and what became of the chosen ones."""
    real = batch["attention_mask"][r].numpy().astype(bool)
    ids = batch["input_ids"][r].numpy()
    labels, positions = batch["mlm_labels"][r].numpy(), batch["mlm_positions"][r].numpy()
    original = ids.copy()
    original[positions[labels != -100]] = labels[labels != -100]
    assert [int(c["id"]) for c in drawn] == ids[real].tolist()
    assert [int(c["original"]) for c in drawn] == original[real].tolist()
    chosen = np.zeros(len(ids), bool)
    chosen[positions[labels != -100]] = True
    assert [bool(c["fate"]) for c in drawn] == chosen[real].tolist()
    for c in drawn:
        if c["fate"]:
            same = c["id"] == c["original"]
            assert c["fate"] == ("kept" if same else "mask" if int(c["id"]) == mask_id else "random")
    if "token_type_ids" in batch:
        assert [int(c["segment"]) for c in drawn] == batch["token_type_ids"][r].numpy()[real].tolist()


def test_the_drawn_examples_are_what_get_batch_returns(built):
    out, data_dir, _ = built
    batch, data, gpt = batch_of("gpt", data_dir, [0])
    drawn = chips(read(out, "gpt"))["gpt", 0]
    assert [int(c["id"]) for c in drawn] == batch["input_ids"][0, :len(drawn)].tolist()
    assert [int(c["target"]) for c in drawn] == batch["targets"][0, :len(drawn)].tolist()
    for script in ("bert", "albert"):
        page = read(out, script)
        batch, data, _ = batch_of(script, data_dir, [0])
        drawn = chips(page)[script, 0]
        check_masked(drawn, batch, 0, data["mask_id"])
        assert page.find("p", data_pair=str(int(batch["pair_labels"][0])))
        if script == "albert":  # each run of chosen positions is one span
            spans = [c.get("span") for c in drawn]
            runs = np.cumsum([bool(s) and (i == 0 or not spans[i - 1]) for i, s in enumerate(spans)])
            assert [s for s in spans if s] == [str(r) for r, s in zip(runs, spans) if s]
    page = read(out, "roberta")  # one sequence in two epochs: two masks; in bert.py, one
    for script in ("roberta", "bert"):
        rows = {e: c for (s, e), c in chips(page).items() if s == script}
        ids = sorted(rows)
        batch, data, module = batch_of(script, data_dir, ids)
        assert ids[0] == 0 and ids[1] >= len(data["rows" if script == "roberta" else "pair_labels"])
        for r, e in enumerate(ids):
            check_masked(rows[e], batch, r, data["mask_id"])
        first, second = ([(c["id"], c["fate"]) for c in rows[e]] for e in ids)
        assert [c["original"] for c in rows[ids[0]]] == [c["original"] for c in rows[ids[1]]]
        assert (first == second) == (script == "bert")
    page = read(out, "electra")
    batch, data, _ = batch_of("electra", data_dir, [0])
    drawn = chips(page)["electra", 0]
    check_masked(drawn, batch, 0, data["mask_id"])
    for c in drawn:  # the discriminator's label: 1 only where a chosen token's sample differs
        assert c["replaced"] == str(int(bool(c["fate"]) and c["sample"] != c["original"]))
        assert c["fate"] or c["sample"] == c["id"]
    assert "untrained generator" in text(page.find("body")[0])


def test_electras_drawing_from_a_trained_run(built, corpus, tmp_path):
    """--run-dir: the samples come from the run's generator at its last step, on the default corpus encoded with
    the run's own tokenizer and settings (here a tokenizer trained on another corpus, whose ids mean other words)."""
    import electra

    run = tmp_path / "run"
    assert electra.run(electra.main, ["--train", "--device", "cpu", "--data", str(corpus), "--out", str(run),
                                      "--steps", "2", "--log-interval", "1", "--eval-examples", "8"]) == 0
    state = electra.load_checkpoint(run / "ckpt.pt")
    ex = site.example("electra", built[1], run_dir=str(run))
    assert ex["source"] == f"the generator of {run}, at step 2"
    drawn = ex["rows"][0]["tokens"]
    assert [t["text"] for t in drawn] == [state["tokenizer"].id_to_token(t["id"]) for t in drawn]
    assert [t["text"] for t in drawn] != [state["tokenizer"].id_to_token(int(c["id"]))
                                          for c in chips(read(built[0], "electra"))["electra", 0]]
    for t in drawn:
        assert t["replaced"] == int(bool(t["fate"]) and t["sample"] != t["original"])


def test_two_builds_give_the_same_bytes(built):
    out, _, first = built
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == first


def test_the_command(tmp_path):
    from conftest import run_script

    r = run_script(ROOT / "docs" / "site.py", "--out", tmp_path / "out", "--run-dir", tmp_path / "none")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: --run-dir")
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def browser():
    """Headless Chromium through Selenium, or None where either is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        return None
    binary, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not binary or not driver:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def test_every_page_in_a_real_browser(built):
    """Each page from file:// in headless Chromium: no console error, no horizontal overflow at 1,400 px (nor the
    diff pages on a 420 px phone, where the two sides stack), and a screenshot that is not blank."""
    from matplotlib.image import imread
    import io

    driver = browser()
    if driver is None:
        message = "needs Chromium, ChromeDriver and selenium (.ci/run installs them)"
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        for width in (1400, 420):
            driver.set_window_size(width, 1000)
            for name in PAGES if width == 1400 else [p for p in PAGES if p.startswith("diff-")]:
                driver.get((built[0] / f"{name}.html").as_uri())
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert not errors, f"{name}.html: {errors[:2]}"
                inner, scroll = driver.execute_script(
                    "return [window.innerWidth, document.documentElement.scrollWidth]")
                assert scroll <= inner, f"{name}.html overflows at {width} px: {scroll} > {inner}"
                pixels = imread(io.BytesIO(driver.get_screenshot_as_png()))
                assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20
        # stacked at 420 px: a changed line takes the width less its number
        assert driver.execute_script("return document.querySelector('td.b.ins').getBoundingClientRect().width"
                                     " / window.innerWidth") > 0.6
    finally:
        driver.quit()
