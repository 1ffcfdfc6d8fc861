//! Every link in `README.md` and `docs/` resolves inside the repository: a relative link names a
//! file that exists, an `#anchor` names a heading of its target page (GitHub's slugs), and no
//! link leaves the repository. A reader following the README must never reach a dead end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use harness::process::workspace_root;
use pulldown_cmark::{BrokenLink, Event, LinkType, Options, Parser, Tag, TagEnd};

/// The pages a reader gets: the README and everything under `docs/`.
fn documentation_pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md")];
    let mut folders = vec![root.join("docs")];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable docs/ entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                pages.push(path);
            }
        }
    }
    pages.sort();
    pages
}

/// GitHub's Markdown dialect, as far as links and headings are concerned.
fn markdown_options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
}

/// GitHub's anchor for a heading: lower-case, every character that is not a letter, digit,
/// `-`, `_` or space dropped, spaces turned into `-`.
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a page's headings get, with GitHub's `-1`, `-2`, … for repeated ones.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(markdown, markdown_options()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = heading.as_mut() {
                    heading.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let slug = github_slug(&heading.take().unwrap_or_default());
                let repeats = seen.entry(slug.clone()).or_insert(0);
                anchors.insert(if *repeats == 0 {
                    slug
                } else {
                    format!("{slug}-{repeats}")
                });
                *repeats += 1;
            }
            _ => {}
        }
    }
    anchors
}

/// A link destination as written in a page.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    destination: String,
    /// Where it was found, for the failure message (the text it is attached to).
    label: String,
}

/// Everything in a page that GitHub renders as a link, and references without a definition.
fn links(markdown: &str) -> (Vec<Link>, Vec<String>) {
    let mut undefined_references = Vec::new();
    let note_undefined = |broken: BrokenLink<'_>| {
        // `[text]` alone is ordinary prose unless a definition exists; `[text][name]` and
        // `[text][]` are meant as links.
        if matches!(broken.link_type, LinkType::Reference | LinkType::Collapsed) {
            undefined_references.push(broken.reference.to_string());
        }
        None
    };
    let parser =
        Parser::new_with_broken_link_callback(markdown, markdown_options(), Some(note_undefined));
    let mut found = Vec::new();
    let mut open: Vec<(String, String)> = Vec::new();
    let mut in_code_block = false;
    for event in parser {
        match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                open.push((dest_url.to_string(), String::new()));
            }
            Event::End(TagEnd::Link | TagEnd::Image) => {
                let (destination, label) = open.pop().expect("a link that was opened");
                found.push(Link { destination, label });
            }
            Event::Start(Tag::CodeBlock(_)) => in_code_block = true,
            Event::End(TagEnd::CodeBlock) => in_code_block = false,
            Event::Code(text) => {
                if let Some((_, label)) = open.last_mut() {
                    label.push_str(&text);
                }
            }
            Event::Text(text) => {
                if let Some((_, label)) = open.last_mut() {
                    label.push_str(&text);
                } else if let Some(url) = bare_url(&text).filter(|_| !in_code_block) {
                    // GitHub turns a bare URL in prose into a link.
                    found.push(Link {
                        destination: url.to_string(),
                        label: text.trim().to_string(),
                    });
                }
            }
            Event::Html(html) | Event::InlineHtml(html) if html.contains("href=") => {
                found.push(Link {
                    destination: html.trim().to_string(),
                    label: "raw HTML".to_string(),
                });
            }
            _ => {}
        }
    }
    (found, undefined_references)
}

/// The first URL in prose text that GitHub would turn into a link.
fn bare_url(text: &str) -> Option<&str> {
    let start = ["http://", "https://", "www."]
        .iter()
        .filter_map(|prefix| text.find(prefix))
        .min()?;
    text[start..].split_whitespace().next()
}

/// A path with `.` and `..` resolved without touching the file system; `None` if it climbs
/// above its start.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What is wrong with one link of `page` (a path relative to `root`), if anything.
fn link_problem(root: &Path, page: &Path, destination: &str) -> Option<String> {
    let has_scheme = destination.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            && !scheme.contains('/')
    });
    if has_scheme || destination.starts_with("//") || destination.starts_with("www.") {
        return Some("points outside the repository (an absolute URL)".to_string());
    }
    if destination.contains("href=") {
        return Some("is raw HTML; write a Markdown link".to_string());
    }
    let (path, anchor) = match destination.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (destination, None),
    };
    if path.starts_with('/') {
        return Some("points outside the repository (an absolute path)".to_string());
    }
    let target = if path.is_empty() {
        page.to_path_buf()
    } else {
        let Some(target) = normalise(&page.parent().unwrap_or(Path::new("")).join(path)) else {
            return Some("points outside the repository (climbs above its root)".to_string());
        };
        target
    };
    let on_disk = root.join(&target);
    if !on_disk.exists() {
        return Some(format!(
            "names `{}`, which does not exist",
            target.display()
        ));
    }
    let anchor = anchor?;
    if on_disk.extension().is_none_or(|ext| ext != "md") {
        return Some(format!(
            "has an anchor into `{}`, which is not a Markdown page",
            target.display()
        ));
    }
    let text = fs::read_to_string(&on_disk).expect("a readable Markdown page");
    let anchors = heading_anchors(&text);
    (!anchors.contains(anchor)).then(|| {
        format!(
            "names `#{anchor}`, but `{}` has no such heading (it has: {})",
            target.display(),
            anchors.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Every problem in every page under `root`, one line each, and how many links were checked.
fn problems(root: &Path, pages: &[PathBuf]) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages {
        let relative = page.strip_prefix(root).expect("a page inside the root");
        let text = fs::read_to_string(page).expect("a readable page");
        let (links, undefined) = links(&text);
        for reference in undefined {
            problems.push(format!(
                "{}: `[{reference}]` is a reference with no definition",
                relative.display()
            ));
        }
        for link in links {
            checked += 1;
            if let Some(problem) = link_problem(root, relative, &link.destination) {
                problems.push(format!(
                    "{}: link `{}` ({}) {problem}",
                    relative.display(),
                    link.destination,
                    link.label
                ));
            }
        }
    }
    (problems, checked)
}

#[test]
fn every_link_in_the_readme_and_docs_resolves_inside_the_repository() {
    let root = workspace_root();
    let pages = documentation_pages(&root);
    assert!(
        pages.len() > 10,
        "expected README.md and the docs/ pages, found {pages:?}"
    );
    let (problems, checked) = problems(&root, &pages);
    assert!(
        checked > 100,
        "only {checked} links found: is the parser reading the pages?"
    );
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_docs_page_is_reachable_from_the_readme() {
    let root = workspace_root();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let linked: BTreeSet<String> = links(&readme)
        .0
        .into_iter()
        .map(|link| {
            link.destination
                .split('#')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let unlinked: Vec<String> = documentation_pages(&root)
        .iter()
        .filter_map(|page| {
            let relative = page.strip_prefix(&root).unwrap().display().to_string();
            (relative.starts_with("docs/") && !linked.contains(&relative)).then_some(relative)
        })
        .collect();
    assert!(
        unlinked.is_empty(),
        "pages the README does not link: {unlinked:?}"
    );
}

/// A scratch repository with the given pages, for the checker's own tests.
fn scratch(pages: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, text) in pages {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    (dir, paths)
}

#[test]
fn the_checker_reports_a_missing_file_a_missing_heading_and_links_out_of_the_repository() {
    let (dir, pages) = scratch(&[
        (
            "README.md",
            "# Suite\n\n[ok](docs/a.md#the-heading) [self](#suite) [gone](docs/missing.md)\n\
             [no heading](docs/a.md#nowhere) [out](../shared/DESIGN.md) [web](https://example.org)\n\
             [abs](/etc/passwd) [mail](mailto:a@example.org) see https://example.org/page\n\
             [ref][nowhere]\n",
        ),
        ("docs/a.md", "# The heading\n\n[back](../README.md#suite)\n"),
    ]);
    let (problems, checked) = problems(dir.path(), &pages);
    let report = problems.join("\n");
    for expected in [
        "`docs/missing.md` (gone) names `docs/missing.md`, which does not exist",
        "`docs/a.md#nowhere` (no heading) names `#nowhere`, but `docs/a.md` has no such heading",
        "`../shared/DESIGN.md` (out) points outside the repository (climbs above its root)",
        "`https://example.org` (web) points outside the repository (an absolute URL)",
        "`/etc/passwd` (abs) points outside the repository (an absolute path)",
        "`mailto:a@example.org` (mail) points outside the repository (an absolute URL)",
        "`https://example.org/page` (see https://example.org/page) points outside",
        "`[nowhere]` is a reference with no definition",
    ] {
        assert!(
            report.contains(expected),
            "expected {expected:?} in:\n{report}"
        );
    }
    assert_eq!(problems.len(), 8, "{report}");
    assert_eq!(checked, 10, "{report}");
}

#[test]
fn anchors_follow_githubs_slugs_including_code_punctuation_and_repeats() {
    let page = "# Redis AUTH tokens (`engine: redis`)\n\n## Alternating users, PostgreSQL: one owner, `<base>`\n\n\
                ## The documentation's links\n\n## Tests\n\n## Tests\n\n## snake_case and-dash\n";
    let anchors = heading_anchors(page);
    let expected: BTreeSet<String> = [
        "redis-auth-tokens-engine-redis",
        "alternating-users-postgresql-one-owner-base",
        "the-documentations-links",
        "tests",
        "tests-1",
        "snake_case-and-dash",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(anchors, expected);
}
