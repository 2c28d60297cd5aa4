"""The words the card rules read, per language: English, Spanish, French, German, Portuguese, and
a language-neutral fallback for the rest.

    key_terms(text, lang) ─► grounding (rules), passages (highlights), the fact checks (facts)

A language's ``Lexicon`` holds its stopwords (Snowball's lists, in ``stopwords/``), a light
suffix stemmer (plurals, gender, common endings: "discreta" and "discretos" are one term), and
the patterns of the question rules ("what is" questions, yes-or-no questions, negations, words
that point at the source, comparisons, opposite terms). Words are compared without accents, so
"número" in a card finds "numero" in an OCRed page.

The neutral fallback knows no words: it keeps every token of three letters or more (function
words are mostly shorter), stems nothing, and reads scripts written without spaces (Chinese,
Japanese, Thai…) as character pairs. Its question rules are off: they need a language.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from importlib.resources import files

NEUTRAL = "und"  # an undetermined or unsupported language: the neutral fallback

_WORD = re.compile(r"[^\W_]+")
# Scripts written without spaces between words: read as overlapping character pairs.
_UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")


def fold(text: str) -> str:
    """Lower case without accents: "Número" and "numero" are one word."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern, re.IGNORECASE) if pattern else None


@dataclass(frozen=True)
class Lexicon:
    code: str
    name: str  # the language's English name, as prompts name it
    stopwords: frozenset[str] = frozenset()  # folded
    # Stemming passes: in each, the first (suffix, replacement) that leaves min_stem letters applies.
    suffixes: tuple[tuple[tuple[str, str], ...], ...] = ()
    min_stem: int = 3
    # Question rules (services/cards/rules.py); None: the rule is off for the language.
    copula: re.Pattern[str] | None = None  # "X is Y": where an answer's restatement ends
    what_is: re.Pattern[str] | None = None  # a "what is" question
    choice: re.Pattern[str] | None = None  # "A or B?"
    negation: re.Pattern[str] | None = None
    answer_start: re.Pattern[str] | None = None  # what may open an answer on its own
    compares: re.Pattern[str] | None = None  # a question that compares two things
    yes_no: re.Pattern[str] | None = None  # a question answered by yes or no
    leans_on_source: re.Pattern[str] | None = None  # "…presented in the text?"
    # Fact checks (services/cards/facts.py)
    comparison: re.Pattern[str] | None = None  # "larger than", "unlike", "vs": the answer compares
    opposites: tuple[tuple[str, str], ...] = ()  # terms that contradict each other ("discrete", "continuous")
    name_joiners: frozenset[str] = frozenset()  # small words inside names ("of", "de", "von")
    stems: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def stem(self, word: str) -> str:
        """A folded word's stem ("distributions" → "distribution"); the neutral fallback keeps it."""
        found = self.stems.get(word)
        if found is None:
            found = word
            for rules in self.suffixes:
                for suffix, replacement in rules:
                    if found.endswith(suffix) and len(found) - len(suffix) >= self.min_stem:
                        found = found[: -len(suffix)] + replacement
                        break
            if len(self.stems) < 200_000:  # words repeat across a book's chunks: each is stemmed once
                self.stems[word] = found
        return found

    def words(self, text: str) -> list[str]:
        """The folded words of a text; unspaced scripts as character pairs."""
        if self.code != NEUTRAL:
            return _WORD.findall(fold(text))
        out: list[str] = []  # not folded: in many scripts the marks are letters (Hindi, Thai)
        for word in _WORD.findall(text.lower()):
            if _UNSPACED.search(word):
                for run in re.split(f"({_UNSPACED.pattern})", word):
                    if _UNSPACED.fullmatch(run):
                        out += [run[i : i + 2] for i in range(max(1, len(run) - 1))]
                    elif run:
                        out.append(run)
            else:
                out.append(word)
        return out

    def key_terms(self, text: str) -> list[str]:
        """Content words of a text, stemmed, without stopwords, first occurrence first."""
        keep: list[str] = []
        for w in self.words(text):
            if w in self.stopwords:
                continue
            if self.code == NEUTRAL and len(w) < 3 and not w.isdigit() and not _UNSPACED.match(w):
                continue  # no list of function words: most are short
            if len(w) > 1 or w.isdigit():
                keep.append(self.stem(w))
        return list(dict.fromkeys(keep))


def _endings(*suffixes: str) -> tuple[tuple[str, str], ...]:
    return tuple((suffix, "") for suffix in suffixes)


def _stopwords(code: str, extra: str = "") -> frozenset[str]:
    """A language's Snowball stopword list (services/cards/stopwords/<code>.txt) and extra words."""
    raw = files("services.cards.stopwords").joinpath(f"{code}.txt").read_text(encoding="utf-8")
    lines = (line.split("|")[0].strip() for line in raw.splitlines() if not line.startswith("#"))
    return frozenset(fold(w) for w in [*lines, *extra.split()] if w)


# English: the rules as they were before other languages came, word for word.
_EN_STOPWORDS = """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those through
    to too under until up very was we were what when where which while who whom whose why will
    with would you your yours text say says said called"""
_EN_SOURCE = (
    r"(?:text|passage|excerpt|extract|(?:code\s+)?snippet|article|author|slides?|chapter|section|document)"
)
ENGLISH = Lexicon(
    "en",
    "English",
    frozenset(_EN_STOPWORDS.split()),
    # One pass a suffix, as before languages came: "bases" → "base" → "bas", as "based" is.
    suffixes=((("ing", ""),), (("ed", ""),), (("s", ""),), (("e", ""),)),
    copula=_compile(r"\s(?:is|are|was|were|means|refers to)\s"),
    what_is=_compile(r"\s*(?:what|who|which)\s+(?:is|are|was|were)\b"),
    choice=_compile(r"\bor\b"),
    negation=_compile(r"\b(?:not|no|never|cannot|none|nothing|neither|nor|without)\b|n't\b"),
    # A noun phrase, "to …", a name, a number, a symbol. Not "represented by \n, while …" (a
    # passive or a comparison cut in two) nor "often used as …".
    answer_start=re.compile(r"(?:a|an|the|to|one|its|their|his|her)\b|[^a-z]"),
    compares=_compile(r"\b(?:between|differ\w*|compare\w*|contrast\w*|versus|vs)\b"),
    yes_no=_compile(
        r"\s*(?:is|are|was|were|am|can|could|do|does|did|will|would|has|have|had|should|must|may|might)\b"
    ),
    # "… presented in the text?", "What does the author argue?", "the code snippet provided", "…
    # of `y` in the code snippet?", "… discussed in these slides?", "the following statement".
    leans_on_source=_compile(
        rf"\b(?:the|this|that|these|those|above|following|given)\s+{_EN_SOURCE}(?=\s*[?.,;:!]|\s*$|\s+(?:says?|"
        r"states?|argues?|describes?|mentions?|suggests?|explains?|discuss(?:es)?|defines?|claims?|provided|"
        r"given|above|below|about)\b)"
        rf"|\b(?:in|on|from|according to)\s+(?:the|this|these)\s+{_EN_SOURCE}\b"
        r"(?!\s+(?:of|box|file|field|editor|string|mode|area|store|database|type|object)\b)"
        r"|\b(?:code|example|snippet|passage|excerpt|program)\s+(?:provided|given|shown|above|below)\b"
        r"|\b(?:the|this|these)\s+(?:following|above)\b"
    ),
    comparison=_compile(
        r"\b(?:(?:more|less|fewer)\s+\w+\s+than|(?!(?:rather|other)\b)\w+er\s+than|unlike|in contrast to|"
        r"compared (?:to|with)|whereas|versus|vs\.?|instead of|as opposed to)(?=\s)"
    ),
    opposites=(
        ("discrete", "continuous"),
        ("continuous", "discontinuous"),
        ("mutable", "immutable"),
        ("finite", "infinite"),
        ("true", "false"),
        ("positive", "negative"),
        ("even", "odd"),
        ("static", "dynamic"),
        ("local", "global"),
        ("public", "private"),
        ("valid", "invalid"),
        ("ordered", "unordered"),
        ("dependent", "independent"),
        ("explicit", "implicit"),
        ("synchronous", "asynchronous"),
        ("increasing", "decreasing"),
        ("convergent", "divergent"),
        ("rational", "irrational"),
    ),
    name_joiners=frozenset({"of", "the", "and", "for", "de", "van", "von", "da", "du", "le", "la"}),
)

SPANISH = Lexicon(
    "es",
    "Spanish",
    _stopwords("es", "texto dice dicen llamado llamada llamados"),
    # The plural, then gender or a verb's ending: "números" and "número", "guardar" and "guardan".
    suffixes=(
        (("es", ""), ("s", "")),
        _endings("mente", "cion", "ar", "er", "ir", "an", "en", "o", "a", "e"),
    ),
    copula=_compile(r"\s(?:es|son|era|eran|fue|fueron|significa|se refiere a)\s"),
    what_is=_compile(r"\s*¿?\s*(?:qu[eé]|qui[eé]n(?:es)?|cu[aá]l(?:es)?)\s+(?:es|son|era|eran|fue)\b"),
    choice=_compile(r"\b(?:o|u)\b"),
    negation=_compile(r"\b(?:no|nunca|jam[aá]s|ning[uú]n[oa]?|nada|ni|sin|tampoco)\b"),
    answer_start=re.compile(r"(?:un|una|unos|unas|el|la|los|las|lo|para|su|sus|al)\b|[^a-záéíóúñü]"),
    compares=_compile(r"\b(?:entre|diferencia\w*|difier\w*|compar\w*|contrast\w*|versus|vs)\b"),
    yes_no=_compile(r"\s*¿?\s*(?:es|son|est[aá]n?|era|fue|puede[n]?|tiene[n]?|hay|existe[n]?|se puede)\b"),
    leans_on_source=_compile(
        r"\b(?:seg[uú]n|en|de|del)\s+(?:el|la|los|las|este|esta|estos|estas|dicho|dicha)\s+"
        r"(?:texto|pasaje|fragmento|extracto|art[ií]culo|diapositivas?|cap[ií]tulo|secci[oó]n|documento)\b"
        r"|\bel\s+autor\b|\b(?:texto|pasaje|fragmento|c[oó]digo|ejemplo)\s+(?:anterior|siguiente|"
        r"proporcionado|dado|mostrado)\b|\b(?:lo|la|el)\s+(?:siguiente|anterior)\b"
        r"|\b(?:el|este|ese|dicho)\s+(?:texto|pasaje|fragmento|documento)\b(?=\s*[?.,;:!]|\s*$)"
    ),
    comparison=_compile(
        r"\b(?:(?:m[aá]s|menos)\s+\w+\s+que|mayor(?:es)? que|menor(?:es)? que|a diferencia de|"
        r"en contraste con|comparad[oa]s? con|mientras que|frente a|versus|vs\.?|en lugar de|en vez de)(?=\s)"
    ),
    opposites=(
        ("discreto", "continuo"),
        ("continuo", "discontinuo"),
        ("mutable", "inmutable"),
        ("finito", "infinito"),
        ("verdadero", "falso"),
        ("positivo", "negativo"),
        ("par", "impar"),
        ("estatico", "dinamico"),
        ("local", "global"),
        ("publico", "privado"),
        ("valido", "invalido"),
        ("ordenado", "desordenado"),
        ("dependiente", "independiente"),
        ("explicito", "implicito"),
        ("creciente", "decreciente"),
        ("convergente", "divergente"),
        ("racional", "irracional"),
    ),
    name_joiners=frozenset({"de", "del", "la", "las", "los", "el", "y"}),
)

FRENCH = Lexicon(
    "fr",
    "French",
    _stopwords("fr", "texte dit disent appele appelee appeles cette cet ces aussi"),
    suffixes=((("aux", "al"), ("x", ""), ("s", "")), _endings("ement", "ation", "euse", "eux", "e")),
    # "Qu'est-ce qu'une liste ?" "Une liste est …"
    copula=_compile(r"\s(?:est|sont|[eé]tait|[eé]taient|signifie|d[eé]signe)\s"),
    what_is=_compile(
        r"\s*(?:qu['’]est-ce\s+qu['’]?e?|qu['’]est|que\s+(?:est|sont)|qui\s+(?:est|sont)|quel(?:le)?s?\s+(?:est|sont))"
    ),
    choice=_compile(r"\bou\b"),
    negation=_compile(r"\b(?:ne|n['’]|pas|jamais|aucun(?:e)?|rien|ni|sans|non)\b"),
    answer_start=re.compile(
        r"(?:un|une|le|la|les|l['’]|de|du|des|pour|son|sa|ses|leur|leurs)\b|[^a-zàâçéèêëîïôûùüÿœæ]"
    ),
    compares=_compile(r"\b(?:entre|diff[eé]ren\w*|diff[eè]r\w*|compar\w*|contrast\w*|versus|vs)\b"),
    yes_no=_compile(
        r"\s*(?:est-ce\s+que|est-ce\s+qu['’]|est-(?:il|elle)|sont-(?:ils|elles)|peut-(?:on|il|elle)|"
        r"a-t-(?:il|elle|on)|y\s+a-t-il|faut-il)"
    ),
    leans_on_source=_compile(
        r"\b(?:selon|d['’]apr[eè]s|dans)\s+(?:le|la|les|ce|cette|ces|l['’])\s*"
        r"(?:texte|passage|extrait|article|auteur|diapositives?|chapitre|section|document)\b"
        r"|\bl['’]auteur\b|\b(?:texte|passage|extrait|code|exemple)\s+(?:ci-dessus|ci-dessous|suivant|donn[eé]|fourni)\b"
        r"|\b(?:ci-dessus|ci-dessous)\b"
        r"|\b(?:le|ce)\s+(?:texte|passage|extrait|document)\b(?=\s*[?.,;:!]|\s*$)"
    ),
    comparison=_compile(
        r"\b(?:(?:plus|moins)\s+\w+\s+que|sup[eé]rieure?s?\s+[aà]|inf[eé]rieure?s?\s+[aà]|contrairement\s+[aà]|"
        r"[aà] la diff[eé]rence de|par rapport [aà]|compar[eé]e?s?\s+[aà]|alors que|tandis que|versus|vs\.?|"
        r"au lieu de|plut[oô]t que)(?=\s)"
    ),
    opposites=(
        ("discret", "continu"),
        ("continu", "discontinu"),
        ("mutable", "immuable"),
        ("fini", "infini"),
        ("vrai", "faux"),
        ("positif", "negatif"),
        ("pair", "impair"),
        ("statique", "dynamique"),
        ("local", "global"),
        ("public", "prive"),
        ("valide", "invalide"),
        ("dependant", "independant"),
        ("explicite", "implicite"),
        ("croissant", "decroissant"),
        ("convergent", "divergent"),
        ("rationnel", "irrationnel"),
    ),
    name_joiners=frozenset({"de", "du", "des", "la", "le", "les", "et"}),
)

GERMAN = Lexicon(
    "de",
    "German",
    _stopwords("de", "text sagt heisst genannt genannte"),
    suffixes=((("ungen", "ung"), ("en", ""), ("er", ""), ("es", ""), ("em", ""), ("e", ""), ("s", "")),),
    copula=_compile(r"\s(?:ist|sind|war|waren|bedeutet|bezeichnet)\s"),
    what_is=_compile(r"\s*(?:was|wer|welche[rsmn]?)\s+(?:ist|sind|war|waren)\b"),
    choice=_compile(r"\boder\b"),
    negation=_compile(r"\b(?:nicht|kein\w*|nie|niemals|nichts|weder|ohne)\b"),
    answer_start=re.compile(
        r"(?:ein|eine|einen|einem|der|die|das|den|dem|zu|um|sein|seine|ihr|ihre)\b|[^a-zäöüß]"
    ),
    compares=_compile(r"\b(?:zwischen|unterschied\w*|unterscheid\w*|vergleich\w*|versus|vs)\b"),
    yes_no=_compile(
        r"\s*(?:ist|sind|war|waren|kann|k[oö]nnen|hat|haben|wird|werden|gibt es|muss|m[uü]ssen|darf|"
        r"soll|sollte)\b"
    ),
    leans_on_source=_compile(
        r"\b(?:im|in dem|laut dem|laut|nach dem|in diesem|in der|auf der|in den)\s+"
        r"(?:Text|Textes|Abschnitt|Auszug|Artikel|Kapitel|Dokument|Folien?|Passage)\b"
        r"|\bder\s+Autor\b|\b(?:obigen|folgenden|vorliegenden|gegebenen)\s+\w+"
        r"|\b(?:sagt|beschreibt|erkl[aä]rt|nennt|erw[aä]hnt|behauptet)\s+(?:der|dieser)\s+(?:Text|Abschnitt|Auszug)\b"
    ),
    comparison=_compile(
        r"\b(?:(?:mehr|weniger)\s+\w+\s+als|\w+er\s+als|im Gegensatz zu[mr]?|anders als|verglichen mit|"
        r"w[aä]hrend|versus|vs\.?|statt|anstatt)(?=\s)"
    ),
    opposites=(
        ("diskret", "stetig"),
        ("diskret", "kontinuierlich"),
        ("stetig", "unstetig"),
        ("veranderlich", "unveranderlich"),
        ("endlich", "unendlich"),
        ("wahr", "falsch"),
        ("positiv", "negativ"),
        ("gerade", "ungerade"),
        ("statisch", "dynamisch"),
        ("lokal", "global"),
        ("offentlich", "privat"),
        ("gultig", "ungultig"),
        ("abhangig", "unabhangig"),
        ("explizit", "implizit"),
        ("steigend", "fallend"),
        ("konvergent", "divergent"),
        ("rational", "irrational"),
    ),
    name_joiners=frozenset({"von", "der", "des", "und", "zu"}),
)

PORTUGUESE = Lexicon(
    "pt",
    "Portuguese",
    _stopwords("pt", "texto diz dizem chamado chamada chamados"),
    # The plural ("ções" → "ção"), then gender or a verb's ending.
    suffixes=(
        (("coes", "cao"), ("oes", "ao"), ("aes", "ao"), ("es", ""), ("s", "")),
        _endings("mente", "cao", "ao", "ar", "er", "ir", "am", "em", "o", "a", "e"),
    ),
    copula=_compile(r"\s(?:é|são|sao|era|eram|foi|foram|significa|refere-se a)\s"),
    what_is=_compile(r"\s*(?:o\s+que|que|quem|qual|quais)\s+(?:é|são|sao|era|foi)\b"),
    choice=_compile(r"\bou\b"),
    negation=_compile(r"\b(?:não|nao|nunca|jamais|nenhum[a]?|nada|nem|sem)\b"),
    answer_start=re.compile(r"(?:um|uma|uns|umas|o|a|os|as|para|seu|sua|seus|suas|ao)\b|[^a-záàâãéêíóôõúç]"),
    compares=_compile(r"\b(?:entre|diferen\w*|difer\w*|compar\w*|contrast\w*|versus|vs)\b"),
    yes_no=_compile(r"\s*(?:é|são|sao|está|estão|era|foi|pode[m]?|tem|têm|há|existe[m]?)\s"),
    leans_on_source=_compile(
        r"\b(?:segundo|de acordo com|em|no|na|nos|nas|do|da)\s+(?:o|a|os|as|este|esta|estes|estas)?\s*"
        r"(?:texto|passagem|trecho|excerto|artigo|slides?|cap[ií]tulo|se[cç][aã]o|documento)\b"
        r"|\bo\s+autor\b|\b(?:texto|trecho|c[oó]digo|exemplo)\s+(?:acima|abaixo|seguinte|fornecido|dado|mostrado)\b"
        r"|\b(?:a seguir|acima)\b"
        r"|\b(?:o|este|esse)\s+(?:texto|trecho|documento)\b(?=\s*[?.,;:!]|\s*$)"
    ),
    comparison=_compile(
        r"\b(?:(?:mais|menos)\s+\w+\s+(?:do\s+)?que|maior(?:es)? (?:do )?que|menor(?:es)? (?:do )?que|"
        r"ao contr[aá]rio d[eoa]s?|diferentemente d[eoa]s?|em contraste com|comparad[oa]s? (?:a|com)|"
        r"enquanto|versus|vs\.?|em vez de|ao inv[eé]s de)(?=\s)"
    ),
    opposites=(
        ("discreto", "continuo"),
        ("continuo", "descontinuo"),
        ("mutavel", "imutavel"),
        ("finito", "infinito"),
        ("verdadeiro", "falso"),
        ("positivo", "negativo"),
        ("par", "impar"),
        ("estatico", "dinamico"),
        ("local", "global"),
        ("publico", "privado"),
        ("valido", "invalido"),
        ("dependente", "independente"),
        ("explicito", "implicito"),
        ("crescente", "decrescente"),
        ("convergente", "divergente"),
        ("racional", "irracional"),
    ),
    name_joiners=frozenset({"de", "do", "da", "dos", "das", "e"}),
)

LEXICONS = {lex.code: lex for lex in (ENGLISH, SPANISH, FRENCH, GERMAN, PORTUGUESE)}
NEUTRAL_LEXICON = Lexicon(NEUTRAL, "")


@functools.lru_cache(maxsize=256)
def lexicon(code: str | None) -> Lexicon:
    """The rules' words for a language code ("pt-BR" reads as "pt"); English when none is given
    (the rules before languages came), the neutral fallback for a language without its own."""
    if code is None:
        return ENGLISH
    return LEXICONS.get(code.lower().split("-")[0].split("_")[0], NEUTRAL_LEXICON)
