"""Name normalisation for the fuzzy stage: one spelling per name, in characters and in pinyin.

County ledgers write one child's name in many ways. :func:`normalise_name` folds them, in order:

1. **NFKC** — full-width letters and digits become half-width (``ＺＨＡＮＧ`` → ``ZHANG``), compatibility
   ideographs become their unified form.
2. **Separators dropped** — white space (including the ideographic space), hyphens, apostrophes and
   the middle dots of transliterated minority names (``·`` U+00B7, ``•`` U+2022, ``・`` U+30FB,
   ``‧`` U+2027, ``∙`` U+2219, ``⋅`` U+22C5, ``•``/``●`` bullets, ``.``, ``。`` …): ``次仁·卓玛`` and
   ``次仁卓玛`` are one name.
3. **Traditional → simplified** (OpenCC ``t2s``): ``張曉明`` → ``张晓明``.
4. **Toneless pinyin** (pypinyin ``Style.NORMAL``, ``ü`` written ``v``), so that homophone characters
   (同音字: ``张小明`` / ``张晓明``) agree. The first character — or the first two for a compound
   surname (欧阳, 司马, 诸葛, 尉迟 …) — is read **as a surname** from :data:`SURNAME_READINGS` where
   the surname reading differs from the common one (曾 zeng not ceng, 单 shan, 解 xie, 仇 qiu, 朴 piao,
   区 ou, 查 zha, 盖 ge, 缪 miao, 翟 zhai, 尉迟 yuchi, 长孙 zhangsun …); the given name is read by
   pypinyin on its own, so no phrase reading straddles the surname boundary.
5. **Names typed in Latin letters** (``Zhang Xiaoming``, ``zhangxiaoming``, ``ZHANG Xiao-ming``,
   ``Lü Wei``/``Lyu Wei``/``Lv Wei``, tone marks allowed) carry no characters: they are lower-cased,
   tone marks stripped, and each space/hyphen-separated piece is segmented into valid pinyin
   syllables (:data:`PINYIN_SYLLABLES`, see :func:`segment_pinyin`), giving the same syllable
   sequence as the characters would.

A name with any Han character is read from its Han characters only (stray Latin letters, digits and
punctuation are dropped); a name without any is read as pinyin. Everything here is pure and cached
(names repeat a lot in a ledger). Nothing here logs or raises with the name in the message.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field

import opencc
from pypinyin import Style, lazy_pinyin

# Surnames whose reading as a surname differs from pypinyin's default reading of the character,
# and the compound surnames (read as one unit). Checked against gateway/data/names_surnames.tsv by
# tests/test_matching_names.py. 覃 is read qin (most families; some say tan — homophone risk only).
SURNAME_READINGS: dict[str, tuple[str, ...]] = {
    "曾": ("zeng",),
    "单": ("shan",),
    "解": ("xie",),
    "仇": ("qiu",),
    "朴": ("piao",),
    "区": ("ou",),
    "查": ("zha",),
    "盖": ("ge",),
    "缪": ("miao",),
    "翟": ("zhai",),
    "覃": ("qin",),
    "卜": ("bu",),
    "薄": ("bo",),
    "牟": ("mou",),
    "柏": ("bai",),
    "秘": ("bi",),
    "种": ("chong",),
    "乐": ("yue",),
    "阚": ("kan",),
    "尉迟": ("yu", "chi"),
    "长孙": ("zhang", "sun"),
    "万俟": ("mo", "qi"),
    "澹台": ("tan", "tai"),
    "欧阳": ("ou", "yang"),
    "司马": ("si", "ma"),
    "司徒": ("si", "tu"),
    "诸葛": ("zhu", "ge"),
    "上官": ("shang", "guan"),
    "东方": ("dong", "fang"),
    "皇甫": ("huang", "fu"),
    "夏侯": ("xia", "hou"),
    "慕容": ("mu", "rong"),
    "公孙": ("gong", "sun"),
    "令狐": ("ling", "hu"),
    "宇文": ("yu", "wen"),
    "南宫": ("nan", "gong"),
    "端木": ("duan", "mu"),
    "独孤": ("du", "gu"),
    "轩辕": ("xuan", "yuan"),
    "呼延": ("hu", "yan"),
    "闻人": ("wen", "ren"),
    "申屠": ("shen", "tu"),
    "太史": ("tai", "shi"),
    "钟离": ("zhong", "li"),
    "赫连": ("he", "lian"),
    "百里": ("bai", "li"),
    "西门": ("xi", "men"),
}
COMPOUND_SURNAMES = frozenset(s for s in SURNAME_READINGS if len(s) == 2)

# Every toneless Mandarin syllable (ü as v), from pypinyin's dictionary, less the interjections
# (m, n, ng, hm, hng) that never occur in names and would make segmentation ambiguous.
PINYIN_SYLLABLES = frozenset(
    """
    a ai an ang ao ba bai ban bang bao bei ben beng bi bian biang biao bie bin bing bo bong bu ca
    cai can cang cao ce cei cen ceng cha chai chan chang chao che chen cheng chi chong chou chu chua
    chuai chuan chuang chui chun chuo ci cong cou cu cuan cui cun cuo da dai dan dang dao de dei den
    deng di dia dian diao die din ding diu dong dou du duan dui dun duo e ei en eng er fa fan fang
    fei fen feng fiao fo fou fu ga gai gan gang gao ge gei gen geng gong gou gu gua guai guan guang
    gui gun guo ha hai han hang hao he hei hen heng hong hou hu hua huai huan huang hui hun huo ji
    jia jian jiang jiao jie jin jing jiong jiu ju juan jue jun ka kai kan kang kao ke kei ken keng
    kong kou ku kua kuai kuan kuang kui kun kuo la lai lan lang lao le lei len leng li lia lian
    liang liao lie lin ling liu lo long lou lu luan lun luo lv lve ma mai man mang mao me mei men
    meng mi mian miao mie min ming miu mo mou mu na nai nan nang nao ne nei nen neng ni nia nian
    niang niao nie nin ning niu nong nou nu nuan nun nuo nv nve o ou pa pai pan pang pao pei pen
    peng pi pian piao pie pin ping po pou pu qi qia qian qiang qiao qie qin qing qiong qiu qu quan
    que qun ran rang rao re ren reng ri rong rou ru rua ruan rui run ruo sa sai san sang sao se sen
    seng sha shai shan shang shao she shei shen sheng shi shou shu shua shuai shuan shuang shui shun
    shuo si song sou su suan sui sun suo ta tai tan tang tao te tei teng ti tian tiao tie ting tong
    tou tu tuan tui tun tuo wa wai wan wang wei wen weng wo wong wu xi xia xian xiang xiao xie xin
    xing xiong xiu xu xuan xue xun ya yan yang yao ye yi yin ying yo yong you yu yuan yue yun za zai
    zan zang zao ze zei zen zeng zha zhai zhan zhang zhao zhe zhei zhen zheng zhi zhong zhou zhu
    zhua zhuai zhuan zhuang zhui zhun zhuo zi zong zou zu zuan zui zun zuo
    """.split()  # noqa: SIM905 - a list of 400 strings reads worse
)
_LONGEST_SYLLABLE = max(len(s) for s in PINYIN_SYLLABLES)

# Characters that separate the parts of a name and carry no meaning: spaces, hyphens, apostrophes,
# and every middle dot or bullet people use in transliterated minority names (after NFKC).
_SEPARATORS = frozenset(" \t\u3000\u00a0-_'’‘`.,。、·•・‧∙⋅●･\u2010\u2011\u2012\u2013\u2014\u2027\u30fb\uff65")
# Spellings of ü typed in Latin letters; after NFKC. lyu/nyu (passport spelling) are folded later.
_UMLAUT = {"ü": "v", "ǖ": "v", "ǘ": "v", "ǚ": "v", "ǜ": "v", "Ü": "v", "Ǖ": "v", "Ǘ": "v", "Ǚ": "v", "Ǜ": "v"}


@dataclass(frozen=True)
class NormalisedName:
    """A name as the encodings see it. ``repr`` hides it (it is personal data).

    ``chars`` are the simplified Han characters without separators (``""`` for a name typed in Latin
    letters or with no usable characters); ``syllables`` the toneless pinyin, one entry per syllable.
    """

    chars: str = field(repr=False)
    syllables: tuple[str, ...] = field(repr=False)

    @property
    def letters(self) -> str:
        """The pinyin as one string of letters (``zhangxiaoming``)."""
        return "".join(self.syllables)

    @property
    def empty(self) -> bool:
        return not self.chars and not self.syllables


def _is_han(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= cp <= 0x4DBF  # Extension A
        or 0x20000 <= cp <= 0x323AF  # Extensions B–H
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs (NFKC maps most away)
        or cp == 0x3007  # 〇
    )


@functools.cache
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


# Per-character caches, filled on first sight (a name is read one character at a time, so a roster of
# 100,000 different names costs only as many OpenCC and pypinyin calls as it has different characters).
_SIMPLIFIED: dict[str, str] = {}
_READING: dict[str, str] = {}


def _simplified(ch: str) -> str:
    out = _SIMPLIFIED.get(ch)
    if out is None:
        out = str(_t2s().convert(ch))
        _SIMPLIFIED[ch] = out
    return out


def _reading(ch: str) -> str:
    """pypinyin's toneless reading of one character (``""`` when it has none)."""
    out = _READING.get(ch)
    if out is None:
        found = lazy_pinyin(ch, style=Style.NORMAL, v_to_u=False, errors="ignore")
        out = found[0] if found else ""
        _READING[ch] = out
    return out


def _han_syllables(chars: str) -> tuple[str, ...]:
    """The surname read as a surname (:data:`SURNAME_READINGS`), then each character of the given
    name read on its own (given names are not phrases: a phrase reading would straddle words)."""
    surname = chars[:2] if chars[:2] in COMPOUND_SURNAMES else chars[:1]
    head = SURNAME_READINGS.get(surname) or tuple(_reading(c) for c in surname)
    return tuple(r for r in (*head, *(_reading(c) for c in chars[len(surname) :])) if r)


def segment_pinyin(letters: str) -> tuple[str, ...] | None:
    """Split lower-case letters into pinyin syllables; ``None`` when the letters are not pinyin.

    Of all segmentations, the one with the fewest syllables starting with a vowel after the first
    (pinyin writes an apostrophe there: ``xi'an``, so unmarked text rarely has one), then the fewest
    syllables, then the longer first syllable: ``nana`` → na·na, ``xian`` → xian.
    """
    n = len(letters)
    # best[i]: the best segmentation of letters[i:], as ((vowel-initial count, syllables), syllables)
    best: list[tuple[tuple[int, int], tuple[str, ...]] | None] = [None] * (n + 1)
    best[n] = ((0, 0), ())
    for i in range(n - 1, -1, -1):
        chosen: tuple[tuple[int, int], tuple[str, ...]] | None = None
        for j in range(min(n, i + _LONGEST_SYLLABLE), i, -1):  # longer syllables first
            rest = best[j]
            syllable = letters[i:j]
            if rest is None or syllable not in PINYIN_SYLLABLES:
                continue
            vowel = 1 if i > 0 and syllable[0] in "aeo" else 0
            cost = (rest[0][0] + vowel, rest[0][1] + 1)
            if chosen is None or cost < chosen[0]:
                chosen = (cost, (syllable, *rest[1]))
        best[i] = chosen
    top = best[0]
    return None if top is None else top[1]


def _latin_syllables(text: str) -> tuple[str, ...]:
    for typed, folded in _UMLAUT.items():
        text = text.replace(typed, folded)
    decomposed = unicodedata.normalize("NFD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    pieces: list[str] = []
    current: list[str] = []
    for ch in plain:
        if ch.isascii() and ch.isalpha():
            current.append(ch)
        elif current:
            pieces.append("".join(current))
            current = []
    if current:
        pieces.append("".join(current))
    out: list[str] = []
    for piece in pieces:
        syllables = segment_pinyin(piece)
        if syllables is None:
            # Passport spelling of ü after l and n (Lyu, Nyu), tried only when the letters are not
            # pinyin as typed: in ``sunanyu`` (sun·an·yu) the n and the yu belong to two syllables.
            folded = piece.replace("lyu", "lv").replace("nyu", "nv").replace("lue", "lve").replace("nue", "nve")
            syllables = segment_pinyin(folded)
            piece = folded if syllables is not None else piece
        # Not pinyin (a foreign name, a typo): keep the letters as one token so bigrams still compare.
        out.extend(syllables if syllables is not None else (piece,))
    return tuple(out)


# Plain CJK Unified Ideographs (U+4E00–U+9FFF) → their simplified form (Han characters only). NFKC
# leaves this block unchanged and none of it is a separator, so a name made only of such characters
# (most names) is folded one cached character at a time, with no normalisation pass.
_PLAIN_HAN: dict[str, str] = {}


def _plain_han(raw: str) -> str | None:
    """The simplified characters of a name made only of plain CJK ideographs; ``None`` otherwise."""
    out = []
    table = _PLAIN_HAN
    for ch in raw:
        folded = table.get(ch)
        if folded is None:
            if not "\u4e00" <= ch <= "\u9fff":
                return None
            folded = "".join(c for c in _simplified(ch) if _is_han(c))
            table[ch] = folded
        out.append(folded)
    return "".join(out)


@functools.lru_cache(maxsize=65536)
def normalise_name(raw: str) -> NormalisedName:
    """Fold a name as typed in a ledger into its :class:`NormalisedName` (see the module docstring)."""
    plain = _plain_han(raw) if raw else None
    if plain:
        return NormalisedName(chars=plain, syllables=_han_syllables(plain))
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(ch for ch in text if ch not in _SEPARATORS and not ch.isspace())
    han = "".join(ch for ch in text if _is_han(ch))
    if han:
        chars = "".join(ch for c in han for ch in _simplified(c) if _is_han(ch))
        return NormalisedName(chars=chars, syllables=_han_syllables(chars))
    # Separators matter for segmentation of Latin names: keep them for that path.
    latin = unicodedata.normalize("NFKC", raw)
    return NormalisedName(chars="", syllables=_latin_syllables(latin))


def han_characters(raw: str) -> str:
    """``normalise_name(raw).chars`` without reading the pinyin (a household register's names are
    compared on their characters only, and most are read once): the simplified Han characters,
    separators and white space dropped, full-width folded; ``""`` for a name without any."""
    plain = _plain_han(raw) if raw else None
    if plain:
        return plain
    text = unicodedata.normalize("NFKC", raw)
    return "".join(ch for c in text if _is_han(c) for ch in _simplified(c) if _is_han(ch))
