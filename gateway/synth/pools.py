"""Given-name pools for the synthetic generator.

Every pool is a string or tuple **ordered from most to least popular**; :mod:`gateway.synth.names`
turns rank into weight with a Zipf law, so a handful of characters (轩 涵 梓 子 浩 欣 怡 …) dominate
and collisions (two children with the same full name) happen as they do in real ledgers.

The orderings are modelled on published name statistics (the Ministry of Public Security's yearly
reports of the most frequent given names of newborns, and general naming fashion by generation);
the weights are a model, not measurements. Every name built from these pools is synthetic: no list
here holds a real person's name, only characters, common given names and syllables.
"""

from __future__ import annotations


def _w(text: str) -> tuple[str, ...]:
    """Space-separated names, most popular first."""
    return tuple(text.split())


# --- children (born ~2008 onwards) ---------------------------------------------------------------

# Two-character given names are built first-character + second-character from these pools.
BOY_FIRST = (
    "子梓浩宇俊一博睿嘉泽皓思明家天奕承沐铭锦文昊晨逸煜永志建鑫佳雨宏云凯景书君晓鹏振启正恒"
    "致少兴立亦哲宸翊若以星瑞元安德成海泓伟国敬钧炎乐晟彦良朗灏骏锐远卓清弘凌"
)
BOY_SECOND = (
    "轩涵然宇辰宸航睿杰豪泽博阳昊铭熙瑞晨凯鑫翔鹏磊诚毅哲恒霖楷源彬峰钧远川林翰瀚奇乐胜康"
    "安平天烨尧煊霆逸骁骏锋驰帆洋涛斌森桐朗钰琪晟祺琛璟珩君齐言柯延谦臻硕彤皓勋文"
)
GIRL_FIRST = (
    "梓子欣诗雨思可一依语佳紫若雅嘉梦心晓婉芷书晨艺馨安沐亦佩静舒乐清美慧琪悦怡月冰文家"
    "金丽凤彤星钰筱笑姝宛千兰玉晴雪秋春海诗韵慕念知梨初"
)
GIRL_SECOND = (
    "涵怡萱诺桐妍琪彤瑶馨琳雪悦汐菲婷欣颖然茜雯蕊冉璇玥嫣洁晴菡萌琦宁静璐瑜芸岚婧甜柔"
    "惠娜佳琴月薇敏舒芮歆熙雅霏卿露菁兮珊莹媛蓉沫若希洋楠溪玲丹"
)
# Single-character given names (about one child in six born after 2005).
BOY_SINGLE = "浩杰宇睿博航凯昊鑫涛阳鹏磊哲轩晨毅斌超帅峰翔豪然俊强瑞恒森琦锐楠畅鸣晟宸灏骁"
GIRL_SINGLE = "欣怡婷悦琪萱妍雪静琳瑶颖佳洁倩茜丹蕾娜璐婧菲雯敏慧晴岚玥蕊薇琴莹楠萌"

# Whole given names that topped the national newborn-name lists, by birth cohort. These recur
# across ledgers (王子涵, 李梓轩, 张欣怡 …) and are what makes same-name collisions common.
POPULAR_BOYS: dict[str, tuple[str, ...]] = {
    "to2014": _w("子轩 梓轩 浩然 俊杰 宇航 浩宇 子豪 皓轩 子涵 梓豪 宇轩 俊熙 子墨 浩轩 博文 一鸣"),
    "2015to2019": _w("浩宇 浩然 宇轩 宇航 沐宸 梓轩 子墨 奕辰 宇泽 俊熙 子轩 一鸣 梓睿 皓轩 浩轩 宇辰"),
    "from2020": _w("沐宸 浩宇 沐辰 茗泽 奕辰 宇泽 浩然 奕泽 宇轩 沐阳 若宸 宸睿 一鸣 梓睿 承泽 子墨"),
}
POPULAR_GIRLS: dict[str, tuple[str, ...]] = {
    "to2014": _w("子涵 梓涵 欣怡 诗涵 紫涵 雨涵 梓萱 可馨 佳怡 思涵 欣妍 雨欣 可欣 紫萱 欣悦 梦瑶"),
    "2015to2019": _w("一诺 依诺 欣怡 梓涵 语桐 欣妍 可馨 若汐 子涵 雨桐 梓萱 诗涵 艺涵 思涵 佳怡 可欣"),
    "from2020": _w("若汐 一诺 艺涵 依诺 梓涵 苡沫 语桐 欣妍 梓萱 可馨 安然 语汐 星冉 清欢 一然 芷若"),
}

# --- adults: parents (born ~1975-2000) and grandparents (born ~1945-1975) -------------------------

PARENT_MEN = _w(
    "伟 强 磊 军 勇 杰 涛 斌 超 明 刚 平 辉 鹏 华 飞 鑫 波 宇 浩 凯 健 "
    "俊 帆 帅 旭 宁 龙 林 阳 建华 建军 志强 志刚 海涛 小龙 晓东 文杰 俊杰 "
    "海波 国栋 建平 志勇 小军 小平 红军 家豪 子健 永强 振华 立新 明辉 晓峰 春雷 "
    "勇军 大伟 云飞 海龙 剑 亮 峰 洋 冬 毅 东 成 兵 江 川"
)
PARENT_WOMEN = _w(
    "芳 丽 娟 敏 静 燕 艳 霞 玲 丹 萍 红 婷 雪 琳 洁 梅 莉 英 娜 慧 颖 "
    "晶 倩 秀英 丽娟 小红 晓燕 丽华 春梅 海燕 雪梅 红梅 玉梅 小燕 婷婷 丹丹 "
    "静静 晶晶 莉莉 艳红 秀兰 美玲 玉婷 春燕 海霞 凤 琴 佳 蓉 露 媛 薇 欢 利 "
    "菊"
)
GRANDPARENT_MEN = _w(
    "建国 建华 国强 国庆 志明 德明 文华 建军 永强 明 福 贵 海 山 林 有才 德福 "
    "长生 福生 国华 树林 兴旺 金山 正 华 军 德华 光明 学文 振国 玉成 卫东 红兵 "
    "向东 跃进 文明 仁 忠"
)
GRANDPARENT_WOMEN = _w(
    "秀英 桂英 秀兰 玉兰 桂兰 秀珍 凤英 玉珍 玉英 兰英 淑珍 淑兰 桂芳 秀芳 翠兰 "
    "桂珍 素珍 冬梅 春花 金花 玉梅 凤兰 秀云 桂香 淑英 月英 秀华 翠英 菊英 素芬"
)

# --- Uyghur-style names (Xinjiang, 65): 本人名·父名, transliterated -----------------------------------

# Whole male given names, and the pieces male names are composed from (阿卜杜 + 热合曼 …; a
# trailing 江 is a common affectionate suffix: 艾力江).
UYGHUR_MALE = _w(
    "买买提 艾力 吐尔逊 艾买提 阿迪力 亚森 依明 肉孜 卡地尔 斯拉木 努尔 热合曼 "
    "伊力哈木 艾克拜尔 吾斯曼 麦麦提 阿不力孜 艾尼 图尔洪 玉素甫 阿力木 艾则孜 "
    "喀斯木 托合提 奥斯曼 尼亚孜 吐逊 帕尔哈提 买合木提 艾合买提 木拉提 艾山 阿里木 "
    "米吉提 亚库甫 伊斯马伊力"
)
UYGHUR_MALE_PREFIX = _w("阿卜杜 阿不都 阿布都")
UYGHUR_MALE_ROOT = _w("拉 热合曼 热依木 克里木 萨拉木 瓦依提 外力 热西提 哈力克 卡德尔 米吉提 沙拉木 艾尼 许库尔")
UYGHUR_FEMALE = _w(
    "古丽 热依拉 玛依拉 祖丽皮亚 布艾杰尔 阿米娜 帕丽达 麦尔哈巴 努尔尼沙 再娜甫 "
    "帕提曼 阿依努尔 迪丽拜尔 萨拉 海丽且姆 米娜瓦尔 茹克亚 阿孜古丽"
)
UYGHUR_FEMALE_PREFIX = _w("阿依 努尔 帕提 米热 迪丽 再 阿娜尔 古再丽 玛依 热依 祖丽 茹仙 阿孜 帕尔 萨依 阿尔")
UYGHUR_FEMALE_SUFFIX = _w("古丽 努尔 拉 娜 罕 汗 孜")

# --- Tibetan-style names (Tibet, 54): two two-syllable elements, no family name ----------------------

TIBETAN_FIRST = _w(
    "扎西 次仁 格桑 达瓦 尼玛 索朗 多吉 旺堆 平措 顿珠 罗布 边巴 普布 巴桑 拉巴 "
    "次旦 丹增 洛桑 强巴 阿旺 米玛 白玛 益西 贡布 群培 旦增 土登 晋美 欧珠 朗杰 "
    "桑珠 仁增"
)
# More first elements for girls (a few unisex ones again, which weights them up for girls).
TIBETAN_FEMALE_FIRST = _w("卓玛 央金 德吉 白玛 格桑 次仁 拉姆 曲珍")
TIBETAN_MALE_SECOND = _w(
    "多吉 次仁 顿珠 平措 旺堆 扎西 罗布 加措 朗杰 坚参 旺久 欧珠 桑珠 多布杰 尼玛 达瓦 群培 贡布 次旦 仁增 伦珠 索朗"
)
TIBETAN_FEMALE_SECOND = _w(
    "卓玛 央金 拉姆 曲珍 德吉 卓嘎 玉珍 措姆 次珍 白珍 央宗 旺姆 普赤 德央 仓决 琼达 卓央 巴珍 片多 益西"
)
# Children are often named after the weekday of their birth (Monday first, as date.weekday()).
TIBETAN_WEEKDAY = _w("达瓦 米玛 拉巴 普布 巴桑 边巴 尼玛")
