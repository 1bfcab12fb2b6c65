"""Training pairs for the scope classifier, from the train files only (../shared/data/README.md).

Positives (the query is about the edited fact): the edit's own prompt, its paraphrases, subject-alias
rewordings (KnowEdit Subject_Aliasing), and each paraphrase once more with one subject word misspelt
(`misspelt`: zsRE's paraphrases, back-translated, misspell subjects: "Who's Nebajoths Dad?").
Negatives: neighbourhood prompts (the same relation of another subject), the same subject under
another relation (KnowEdit Relation_Specificity), synthetic same-subject probes (below), and hard
negatives that retrieval finds among the other edits (added in train.py, where the encoder is at
hand), which also stand for unrelated queries.

The train files' same-subject prompts are nearly all "The name of the <relation> of <subject> is";
asked the same way about other subjects, a gate trained on them alone accepts "<subject> <relation>"
or a question about the subject's other relations. So every edit also gets synthetic same-subject
negatives: a Wikidata property label (a relation the edit does not ask about: none of the label's
words occurs in the edit prompt) in cloze, nominal and question phrasings.

Gate v3 (issues 24 and 26) adds data for one weakness: telling another relation of the same subject apart
when the subject is unfamiliar (made-up entities, rules). The real train subjects are mostly familiar to
the encoder, and their other-relation prompts come in two fixed phrasings, so the gate could lean on the
subject's familiarity and on the phrasing. Added, each by a small function below:
- `unfamiliar_copy`: a share of edits copied with the subject replaced by a made-up name (`made_up_name`),
  labels unchanged, so that the relation must decide;
- `TemplateBank`: the relation templates of the train files' own prompts (the subject cut out), which give
  same-relation rewordings as positives (`template_rewordings`: another record's paraphrase of the same
  template) and other relations in the files' many phrasings as negatives (`template_same_subject`);
- `target_object_probes`: a question about the edit's new object under an unrelated relation, a negative;
- `with_context`: an unrelated sentence (another record's prompt and answer) before a query, as chat turns
  and CounterFact's paraphrases have.

Gate v4 adds the positive side of v3's label probes. v3 put "What is the {label} of X?" against edits only
as negatives (labels the edit does not ask), and the train files' CounterFact paraphrases are clozes, so v3
learnt the question form itself as a sign of another relation ("What is the employer of X?" against "X is
employed by": 0.99 → 0.07). `own_label_phrasings` names the label the edit does ask (`own_label`) and
asks it in question, possessive and nominal form ("The founder of X is" for "X was founded by") as
positives; verbal labels are asked by their noun (`label_noun`) in both the positives and v3's negatives.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editdata.cases import names
from server.gate.features import find_span

# Common Wikidata property labels, across people, places, works, organisations, taxa, genes and
# astronomical objects: the relations a same-subject probe may ask instead of the edited one.
PROPERTY_LABELS = (
    "place of birth", "place of death", "date of birth", "date of death", "occupation", "employer", "father",
    "mother", "sibling", "spouse", "child", "country of citizenship", "educated at", "religion",
    "sex or gender", "field of work", "member of", "award received", "position held", "native language",
    "genre", "instrument", "record label", "country", "located in the administrative territorial entity",
    "capital", "continent", "official language", "part of", "has part(s)", "instance of", "subclass of",
    "founded by", "headquarters location", "industry", "owned by", "parent organization", "manufacturer",
    "developer", "publisher", "director", "screenwriter", "composer", "cast member", "author",
    "original language of film or TV show", "publication date", "inception", "follows", "followed by",
    "named after", "described by source", "taxon rank", "parent taxon", "found in taxon", "chromosome",
    "constellation", "epoch", "drainage basin", "mouth of the watercourse", "legal form", "architect",
    "sport", "member of sports team", "league", "position played on team / speciality", "military branch",
    "conflict", "noble title", "family", "IUCN conservation status", "cell component", "molecular function",
    "biological process", "strand orientation", "platform", "notable work", "movement", "shares border with",
    "head of government", "located in time zone", "languages spoken, written or signed", "ethnic group",
    "political party", "residence", "nominated for", "significant event", "use", "material used",
    "location of formation", "dissolved, abolished or demolished date", "operator", "significant person",
)
# Words by which a prompt asks a label's relation without naming it ("X passed away in": place of death).
RELATION_CUES = {
    "place of birth": "born birthplace native", "place of death": "died passed away death", "date of birth": "born",
    "date of death": "died passed away", "occupation": "works profession job", "employer": "works employed",
    "country of citizenship": "citizen nationality", "educated at": "studied attended graduated university college",
    "native language": "language tongue speak", "languages spoken, written or signed": "language speak tongue",
    "official language": "language speak", "original language of film or TV show": "language",
    "instrument": "plays", "position played on team / speciality": "plays position",
    "member of sports team": "plays team club",
    "located in the administrative territorial entity": "located where", "country": "located where",
    "headquarters location": "headquartered based located", "location of formation": "founded formed",
    "founded by": "founder founded", "developer": "developed created", "manufacturer": "produced made manufactured",
    "owned by": "owner owns", "parent organization": "owner owned subsidiary", "religion": "religious faith",
    "genre": "music plays", "spouse": "married wife husband", "child": "son daughter", "sibling": "brother sister",
    "father": "dad parent", "mother": "mom parent", "record label": "label signed", "author": "wrote written",
    "director": "directed", "composer": "composed", "award received": "won awarded",
    "position held": "position office", "continent": "located", "capital": "capital",
    "member of": "member", "head of government": "mayor", "notable work": "known",
    "found in taxon": "found living species", "parent taxon": "family genus", "family": "genus",
}
RELATION_STOPWORDS = frozenset({"of", "the", "in", "by", "on", "to", "a", "an", "or", "is", "and", "s", "date"})
SYNTHETIC_PER_EDIT = 2
# Phrasings of a same-subject probe under a property label: KnowEdit's two, and (v3) a question and a
# possessive, which the train files' same-subject prompts never use. They fill in {label} (the label as
# Wikidata writes it) or {noun} (`label_noun`): v2's keep the raw label (its pairs are drawn and encoded as
# before); v3's and v4's ask by the noun.
LABEL_PHRASINGS = ("The {label} of {subject} is", "{subject} {label}")
QUESTION_PHRASINGS = ("What is the {noun} of {subject}?", "{subject}'s {noun} is")
# v4: the edit's own relation asked in those forms, and nominally, as positives.
OWN_LABEL_PHRASINGS = QUESTION_PHRASINGS + ("The {noun} of {subject} is",)
# Phrases whose words would name another label ("mother tongue" is no mother).
COMPOUND_LABELS = {"mother tongue": "native language", "first language": "native language"}
# Nouns for the labels that are not nouns, so that "The founder of X is" is asked, not "The founded by of X is".
LABEL_NOUNS = {
    "founded by": "founder", "owned by": "owner", "educated at": "alma mater", "followed by": "successor",
    "follows": "predecessor", "named after": "namesake", "member of": "organisation",
    "located in the administrative territorial entity": "location", "member of sports team": "team",
    "position played on team / speciality": "position", "languages spoken, written or signed": "language",
    "original language of film or TV show": "original language", "has part(s)": "part", "instance of": "type",
    "subclass of": "class", "part of": "parent", "found in taxon": "taxon", "shares border with": "neighbour",
    "located in time zone": "time zone", "described by source": "source", "material used": "material",
    "use": "use", "nominated for": "nomination", "award received": "award", "conflict": "war",
    "dissolved, abolished or demolished date": "end date", "sex or gender": "gender",
}
# Words that carry no relation when templates are compared (wh-words, copulas, KnowEdit's "The name of ...").
TEMPLATE_STOPWORDS = RELATION_STOPWORDS | frozenset({
    "which", "what", "who", "whom", "whose", "where", "when", "how", "was", "were", "are", "be", "been", "it",
    "they", "does", "did", "do", "that", "this", "has", "have", "had", "name", "names", "at", "for", "as",
    "with", "from", "its", "their", "his", "her", "he", "she", "there", "one", "called", "known"})
# Shares of edits that get each v3 addition (sized so that training stays under ~45 min on 2 cores).
MADE_UP_SHARE = 0.12
QUESTION_PROBE_SHARE = 0.5
TEMPLATE_NEGATIVE_SHARE = 0.5
REWORDING_SHARE = 0.5
TARGET_OBJECT_SHARE = 0.35
CONTEXT_SHARE = 0.15
OWN_LABEL_SHARE = 0.6  # v4
# Pair kinds whose queries meet their nearest other edits as retrieved negatives (train.py). The v3
# additions are left out: they are many, and the kinds they copy are mined already.
MINED_KINDS = frozenset({"prompt", "paraphrase", "alias", "neighbourhood", "same_subject"})

TRAIN_FILES = (
    "counterfact/train.json",
    "zsre/train-1k.json",
    "knowedit/wiki_counterfact_train.json",
    "knowedit/wiki_recent_train.json",
)


@dataclass(frozen=True)
class EditText:
    subject: str
    prompt: str
    target_new: str


@dataclass(frozen=True)
class Pair:
    query: str
    edit: int  # index into the edit list
    label: int  # 1: in scope
    kind: str  # prompt, paraphrase, alias, neighbourhood, same_subject, synthetic_same_subject, retrieved


def build_pairs(data_dir: Path, max_cases_per_file: int | None, seed: int) -> tuple[list[EditText], list[Pair]]:
    """The pairs of every train record (or the first `max_cases_per_file` of each file, shuffled).

    The v2 pairs are drawn from `rng` exactly as v2 drew them (the encoder cache and the comparison with
    v2 rely on it); the v3 additions draw from their own generator.
    """
    rng, extra, v4 = random.Random(seed), random.Random(seed + 1), random.Random(seed + 2)
    files = [json.loads((data_dir / name).read_text()) for name in TRAIN_FILES]
    every = [r for records in files for r in records]
    bank, contexts = TemplateBank.from_records(every), context_sentences(every)
    edits: list[EditText] = []
    pairs: list[Pair] = []
    for records in files:
        rng.shuffle(records)
        for record in records[:max_cases_per_file]:
            built = _from_record(record)
            if built is None:
                continue
            edit, queries = built
            queries += [(q, 0, "synthetic_same_subject") for q in synthetic_same_subject(edit, rng)]
            paraphrases = [q for q, _, kind in queries if kind == "paraphrase"]
            queries += [(m, 1, "misspelt_paraphrase") for q in paraphrases if (m := misspelt(q, edit.subject, rng))]
            queries += v3_additions(edit, record, queries, bank, contexts, extra)
            if v4.random() < OWN_LABEL_SHARE:
                queries += [(q, 1, "own_label") for q in own_label_phrasings(edit, v4)]
            edits.append(edit)
            pairs += [Pair(q, len(edits) - 1, label, kind) for q, label, kind in queries if q.strip()]
            if edit.subject.strip() and extra.random() < MADE_UP_SHARE:
                copy, copied = unfamiliar_copy(edit, queries, made_up_name(extra, edit.subject))
                edits.append(copy)
                pairs += [Pair(q, len(edits) - 1, label, kind) for q, label, kind in copied if q.strip()]
    return edits, pairs


def v3_additions(
    edit: EditText, record: dict[str, Any], queries: list[tuple[str, int, str]], bank: TemplateBank,
    contexts: list[str], rng: random.Random,
) -> list[tuple[str, int, str]]:
    """The v3 queries of one edit, each kind for its share of edits (see the module docstring)."""
    added: list[tuple[str, int, str]] = []
    positives = [q for q, label, _ in queries if label == 1]
    if rng.random() < QUESTION_PROBE_SHARE:
        added += [(q, 0, "synthetic_same_subject")
                  for q in synthetic_same_subject(edit, rng, 1, QUESTION_PHRASINGS)]
    if rng.random() < TEMPLATE_NEGATIVE_SHARE:
        added += [(q, 0, "template_same_subject")
                  for q in template_same_subject(edit, positives, record_answers(record), bank, rng)]
    if rng.random() < REWORDING_SHARE:
        added += [(q, 1, "template_rewording") for q in template_rewordings(edit, bank, rng)]
    if rng.random() < TARGET_OBJECT_SHARE:
        added += [(q, 0, "target_object") for q in target_object_probes(edit, rng)]
    if rng.random() < CONTEXT_SHARE:
        added += with_context(edit, queries + added, contexts, rng)
    return added


def _from_record(r: dict[str, Any]) -> tuple[EditText, list[tuple[str, int, str]]] | None:
    if "src" in r:  # MEND zsRE
        if not r.get("alt"):
            return None
        edit = EditText(r["subject"], r["src"], r["alt"])
        # Its `loc` NQ questions are kept out: scope_classifier/evaluate.py measures unrelated_fpr on them.
        return edit, [(r["src"], 1, "prompt"), (r.get("rephrase", ""), 1, "paraphrase")]
    if not r.get("target_new") or not r.get("prompt"):
        return None
    edit = EditText(r["subject"], r["prompt"], r["target_new"])
    queries = [(r["prompt"], 1, "prompt")]
    if "rephrase_prompt" in r:
        queries.append((r["rephrase_prompt"], 1, "paraphrase"))
    if "locality_prompt" in r:  # EasyEdit flat CounterFact
        queries.append((r["locality_prompt"], 0, "neighbourhood"))
    locality = r.get("locality") or {}
    portability = r.get("portability") or {}
    queries += [(item["prompt"], 0, "same_subject") for item in locality.get("Relation_Specificity", [])]
    queries += [(item["prompt"], 1, "alias") for item in portability.get("Subject_Aliasing", [])]
    return edit, queries


def synthetic_same_subject(
    edit: EditText, rng: random.Random, n: int = SYNTHETIC_PER_EDIT, phrasings: tuple[str, ...] = LABEL_PHRASINGS,
) -> list[str]:
    """Probes about the edit's subject under relations the edit prompt does not name, in turn in each of
    `phrasings` (KnowEdit's two by default; v3 adds `QUESTION_PHRASINGS`)."""
    if not edit.subject.strip():
        return []
    prompt_words = set(re.findall(r"\w+", edit.prompt.casefold()))
    others = [label for label in PROPERTY_LABELS
              if not (_relation_words(label) & prompt_words)]
    return [phrasings[i % len(phrasings)].format(label=label, noun=label_noun(label), subject=edit.subject)
            for i, label in enumerate(rng.sample(others, min(n, len(others))))]


def label_noun(label: str) -> str:
    """The noun that asks a property label's relation ("founded by" → "founder")."""
    return LABEL_NOUNS.get(label, label)


def own_label(prompt: str) -> str | None:
    """The property label the prompt asks, when one stands out: all of the label's own words named count 2,
    each of its cue words 1 ("X was written by": "author" 1 through the cue "written"; "X is a citizen of":
    "country of citizenship" 1). None when no label is named or two tie: a wrong label would teach a wrong
    positive. Dates are left out: the files ask no dates, and "cause of death" would read as one."""
    text = prompt.casefold()
    for phrase, label in COMPOUND_LABELS.items():
        text = text.replace(phrase, label)
    words = set(re.findall(r"\w+", text))

    def score(label: str) -> tuple[int, int]:  # ties go to the label with more of its words named
        own = set(re.findall(r"\w+", label.casefold())) - TEMPLATE_STOPWORDS
        cues = set(RELATION_CUES.get(label, "").split()) - own
        return 2 * (own <= words) + len(cues & words), len(own & words)

    ranked = sorted(((score(label), label) for label in PROPERTY_LABELS if "date" not in label), reverse=True)
    (best, label), (second, _) = ranked[:2]
    return label if best[0] > 0 and best > second else None


def own_label_phrasings(edit: EditText, rng: random.Random, n: int = 2) -> list[str]:
    """Positives: the relation the edit asks, by its label, in question, possessive and nominal form
    ("What is the employer of X?" for "X is employed by"), so that the form alone says nothing."""
    label = own_label(edit.prompt)
    if label is None or not edit.subject.strip() or find_span(edit.prompt, edit.subject) is None:
        return []
    return [phrasing.format(noun=label_noun(label), subject=edit.subject)
            for phrasing in rng.sample(OWN_LABEL_PHRASINGS, n)]


MISSPELLABLE = re.compile(r"[^\W\d_]{4,}")  # words of four letters or more: short ones are numerals, initials


def misspelt(query: str, subject: str, rng: random.Random) -> str | None:
    """The query with one letter inside one subject word dropped, changed, doubled or swapped with the
    next; None when the query does not hold the subject or the subject has no word of four letters or more."""
    span = find_span(query, subject)
    words = list(MISSPELLABLE.finditer(subject))
    if span is None or not words:
        return None
    word = rng.choice(words)
    i = span[0] + word.start() + rng.randrange(1, len(word.group()) - 2)  # first and last letters stay (swap too)
    op = rng.choice(("drop", "change", "double", "swap"))
    replacement = {"drop": "", "change": rng.choice([c for c in "aeioulnrst" if c != query[i].lower()]),
                   "double": query[i] * 2, "swap": query[i + 1] + query[i]}[op]
    typo = query[:i] + replacement + query[i + (2 if op == "swap" else 1):]
    return typo if typo != query else None  # swapping two equal letters changes nothing


def _relation_words(label: str) -> set[str]:
    words = set(re.findall(r"\w+", f"{label} {RELATION_CUES.get(label, '')}".casefold()))
    return words - RELATION_STOPWORDS


def relation_template(text: str, subject: str) -> str | None:
    """The text with the subject's first whole-word occurrence cut out as "{}": the relation it asks.
    None when the subject does not occur, or the text has braces of its own."""
    if not subject.strip() or "{" in text or "}" in text:
        return None
    match = re.search(rf"(?<!\w){re.escape(subject)}(?!\w)", text, flags=re.IGNORECASE)
    return None if match is None else text[:match.start()] + "{}" + text[match.end():]


def relation_stems(text: str) -> set[str]:
    """Word stems (first four letters) that say which relation a text asks, widened by `RELATION_CUES`.

    Two templates that share a stem may ask the same relation ("located" / "location"); a cue word
    brings its label's words in ("born" → place of birth, date of birth), so "What city was X born in?"
    and "The place of birth of X is" meet. Used to keep a negative away from the edit's own relation:
    erring towards overlap only costs a negative.
    """
    words = {w for w in re.findall(r"[^\W\d_]+", text.casefold()) if w not in TEMPLATE_STOPWORDS}
    for label in RELATION_CUES:
        related = _relation_words(label)
        if related & words:
            words |= related
    return {w[:4] for w in words}


def record_answers(record: dict[str, Any]) -> frozenset[str]:
    """Every answer a train record gives for its edited fact, old and new, casefolded."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for key in ("target_new", "ground_truth", "alt", "answers", "pred"):
        walk(record.get(key))
    return frozenset(a.strip().casefold() for a in found if a.strip())


@dataclass(frozen=True)
class TemplateBank:
    """Relation templates ("{} was developed by") of the train records' prompts, with the answers each
    was seen with, and the paraphrase templates seen for each (same relation, other words)."""

    answers: dict[str, frozenset[str]]  # template → answers of its records
    rewordings: dict[str, tuple[str, ...]]  # template → templates of its records' paraphrases

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> TemplateBank:
        answers: dict[str, set[str]] = {}
        rewordings: dict[str, set[str]] = {}
        for r in records:
            prompt, paraphrase = r.get("src") or r.get("prompt"), r.get("rephrase") or r.get("rephrase_prompt")
            template = relation_template(prompt or "", r.get("subject") or "")
            if template is None:
                continue
            answers.setdefault(template, set()).update(record_answers(r))
            reworded = relation_template(paraphrase or "", r["subject"])
            # A paraphrase with text before the subject's sentence carries a context, not a rewording.
            if reworded is not None and reworded != template and not SENTENCE_BREAK.search(reworded):
                rewordings.setdefault(template, set()).add(reworded)
        return cls({t: frozenset(a) for t, a in answers.items()},
                   {t: tuple(sorted(r)) for t, r in rewordings.items()})


SENTENCE_BREAK = re.compile(r"[.!?]\s")


def template_rewordings(edit: EditText, bank: TemplateBank, rng: random.Random, n: int = 1) -> list[str]:
    """Positives: the edit's prompt reworded by a paraphrase template that another train record of the
    same prompt template has ("{}, the" → "{} is incredible at"), so rewordings of a relation (nominal,
    verbal, question) are taught for every subject, not only the records that came with them."""
    template = relation_template(edit.prompt, edit.subject)
    options = bank.rewordings.get(template or "", ())
    reworded = rng.sample(options, min(n, len(options)))
    return [r.replace("{}", edit.subject, 1) for r in reworded]


def template_same_subject(
    edit: EditText, positives: list[str], answers: frozenset[str], bank: TemplateBank, rng: random.Random,
    n: int = 1,
) -> list[str]:
    """Negatives: the edit's subject in another relation's template from the train files (cloze, nominal
    or question: "{} was written by", "What college did {} go to?"), so that another relation is
    rejected whatever its phrasing.

    A template is another relation when it shares no relation stem with the edit's prompt or its
    positives and no answer with the edit's record or the edit prompt's own template and its
    rewordings; templates without a content word ("{}, in") are skipped, as they could ask anything.
    """
    own = relation_template(edit.prompt, edit.subject)
    near = {own, *bank.rewordings.get(own or "", ())}
    known = set(answers).union(*(bank.answers.get(t or "", frozenset()) for t in near))
    stems = set().union(*(relation_stems(relation_template(q, edit.subject) or q) for q in positives))
    candidates = sorted(bank.answers)
    found: list[str] = []
    for template in rng.sample(candidates, min(len(candidates), 40 * n)):
        template_stems = relation_stems(template)
        if (template in near or not template_stems or template_stems & stems
                or bank.answers[template] & known):
            continue
        found.append(template.replace("{}", edit.subject, 1))
        if len(found) == n:
            break
    return found


def target_object_probes(edit: EditText, rng: random.Random, n: int = 1) -> list[str]:
    """Negatives that name the edit's new object under an unrelated relation ("What is the population
    of Taipei?" for an edit moving the Space Needle to Taipei): naming the target is no reason to
    answer from the edit. Only names (a capital letter first), and a label the prompt does not ask."""
    target = edit.target_new.strip()
    if not target[:1].isupper() or target.casefold() == edit.subject.casefold():
        return []
    probe = EditText(target, edit.prompt, edit.subject)
    return synthetic_same_subject(probe, rng, n, rng.choice((LABEL_PHRASINGS, QUESTION_PHRASINGS)))


def context_sentences(records: list[dict[str, Any]]) -> list[str]:
    """True statements from train records (prompt and true answer), to stand before a query as an
    unrelated context."""
    out = []
    for r in records:
        prompt, answer = r.get("src") or r.get("prompt"), r.get("pred") or r.get("ground_truth")
        if isinstance(prompt, str) and isinstance(answer, str) and prompt.strip() and answer.strip():
            out.append(f"{prompt.strip()} {answer.strip()}.")
    return out


def with_context(
    edit: EditText, queries: list[tuple[str, int, str]], contexts: list[str], rng: random.Random,
) -> list[tuple[str, int, str]]:
    """One positive (a paraphrase, else the prompt) and one same-subject negative again, each after an
    unrelated sentence that names neither the subject nor the target: chat turns and CounterFact's
    paraphrases put text before the question, and the label must not change for it."""
    context = rng.choice(contexts)
    if names(context, edit.subject) or names(context, edit.target_new):
        return []
    positive = ([q for q, _, kind in queries if kind == "paraphrase"]
                or [q for q, _, kind in queries if kind == "prompt"])
    negative = [q for q, label, kind in queries if label == 0 and "same_subject" in kind]
    out = [(f"{context} {rng.choice(positive)}", 1, "context_positive")] if positive else []
    return out + ([(f"{context} {rng.choice(negative)}", 0, "context_negative")] if negative else [])


NAME_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "st",
               "t", "tr", "v", "z", "th", "sh", "c", "j", "w", "")
NAME_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "y", "ae")
NAME_CODAS = ("", "", "", "", "n", "r", "l", "s", "k", "th", "x", "m", "sk", "nd", "v")
# Shapes of entity names: a person, a place, a coded object, a titled work or organisation.
NAME_NOUNS = ("Ledger", "Institute", "Company", "Review", "Bridge", "Tower", "Festival", "River", "Society",
              "Gazette", "Project", "Orchestra", "Foundation", "Cup", "Chronicle", "Archive", "Gallery", "Works")


def pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word of one to three syllables and three to nine letters ("Velmora", "Drask")."""
    while True:
        syllables = rng.choice((1, 2, 2, 2, 3))
        word = "".join(rng.choice(NAME_ONSETS) + rng.choice(NAME_VOWELS) + rng.choice(NAME_CODAS)
                       for _ in range(syllables))
        if 3 <= len(word) <= 9:
            return word.capitalize()


def made_up_name(rng: random.Random, avoid: str) -> str:
    """A made-up entity name in one of several shapes ("Velmora Drask", "Tovik-7", "The Quillen Ledger",
    "Quorvane", "K. Morvath"), sharing no word with `avoid` (the real subject it stands in for)."""
    shapes = (
        lambda: f"{pseudo_word(rng)} {pseudo_word(rng)}",
        lambda: f"{pseudo_word(rng)}-{rng.randint(1, 99)}",
        lambda: f"The {pseudo_word(rng)} {rng.choice(NAME_NOUNS)}",
        lambda: pseudo_word(rng),
        lambda: f"{rng.choice('BCDFGHJKLMNPRSTVZ')}. {pseudo_word(rng)}",
    )
    avoided = set(re.findall(r"\w+", avoid.casefold()))
    while True:
        name = rng.choice(shapes)()
        if not set(re.findall(r"\w+", name.casefold())) - {"the"} & avoided:
            return name


def unfamiliar_copy(
    edit: EditText, queries: list[tuple[str, int, str]], name: str,
) -> tuple[EditText, list[tuple[str, int, str]]]:
    """The edit and its queries with the subject replaced by a made-up name wherever it occurs, labels
    unchanged (kinds prefixed "made_up_"): an unfamiliar subject, so only the relation can decide.

    A positive that does not name the subject (an alias, a misspelling) is dropped: it names the real
    entity, which the copy is not about. Negatives that do not name it (neighbourhood prompts) stay.
    """
    pattern = re.compile(rf"(?<!\w){re.escape(edit.subject)}(?!\w)", flags=re.IGNORECASE)

    def renamed(text: str) -> str:
        return pattern.sub(lambda _: name, text)

    copy = EditText(name, renamed(edit.prompt), renamed(edit.target_new))
    copied = [(renamed(q), label, f"made_up_{kind}") for q, label, kind in queries
              if label == 0 or pattern.search(q)]
    return copy, copied
