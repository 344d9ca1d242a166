"""Words every edge shares: a count with its noun in the right number, and a goal's language.

:func:`counted` writes "1 error", "2 errors", "0 examples" (never "1 error(s)"): reports,
the page and the assistant say counts of problems, rows and examples with it.

A goal written in Korean gets a plan in Korean (:mod:`backend.training.plan`): :func:`is_korean`
tells, :func:`korean_subject` drops the request around the goal ("가을 분위기로 써 줘" ->
"가을 분위기"), :func:`with_ro` adds the particle 로/으로 the way Korean spells it, and
:func:`name_words` turns the goal's words into English ones for an adapter name ("가을
분위기" -> ["autumn", "mood"]) from a small glossary. Nothing here imports anything but ``re``.
"""

from __future__ import annotations

import re

# --- counts ---------------------------------------------------------------------------------

_IRREGULAR = {"entry": "entries", "query": "queries", "child": "children", "this": "these", "was": "were",
              "is": "are", "has": "have"}


def plural(noun: str) -> str:
    """The plural of an English noun: 'error' -> 'errors', 'entry' -> 'entries'."""
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def counted(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and its noun in the right number: (1, 'error') -> '1 error', (2, 'error')
    -> '2 errors', (0, 'row') -> '0 rows'; ``many`` when the plural is not the rule's."""
    return f"{count} {noun if count == 1 else (many or plural(noun))}"


# --- a goal's language ------------------------------------------------------------------------

_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def is_korean(text: str | None) -> bool:
    """True when ``text`` is written in Korean (two or more Hangul syllables)."""
    return len(_HANGUL.findall(text or "")) >= 2


# Words that only ask ("write it", "please", "make it so"): dropped from the end of a goal.
_REQUEST_WORDS = re.compile(
    r"^(?:써|써줘|써요|써주세요|써줄래|쓰게|쓰도록|쓰기|써서|작성|작성해|작성해줘|작성하게|만들어|만들어줘|만들어주세요|"
    r"해|해줘|해요|해주세요|해줄래|해라|줘|줘요|주세요|줄래|하게|하도록|되게|바꿔|바꿔줘|글|글을|글로|글이|"
    r"문장|문장을|문장으로|답|답해|답해줘|말해|말해줘|말하게|말하도록|표현|표현해|표현해줘|부탁해|부탁해요|"
    r"좀|제발|주라|있게|나오게|들리게|느껴지게|보이게|학습해|학습해줘|훈련해|훈련해줘|가르쳐|가르쳐줘)$")
_PARTICLE_END = re.compile(r"(?:으로|로|을|를|이|가|은|는|의|에|에서|와|과|하고)$")


def korean_subject(goal: str) -> str:
    """A Korean goal without the request around it: "가을 분위기로 써 줘" -> "가을 분위기",
    "가을 분위기로 글을 쓰게 해줘" -> "가을 분위기", "해적처럼 말하게 해 줘" -> "해적처럼"."""
    words = goal.strip().strip(" .!?~,;:。！？").split()
    while len(words) > 1 and (_REQUEST_WORDS.match(words[-1]) or re.search(r"(?:줘|주세요|해요)$", words[-1])):
        words.pop()
    if not words:
        return goal.strip()
    last = words[-1]
    if _HANGUL.search(last) and not last.endswith(("처럼", "같이", "듯이")):
        stripped = re.sub(r"(?:으로|로)$", "", last)
        words[-1] = stripped or last
    return " ".join(words)


def _final_consonant(char: str) -> int:
    """The final consonant of a Hangul syllable (0 for none; 8 is ㄹ); -1 for any other character."""
    if not _HANGUL.match(char):
        return -1
    return (ord(char) - 0xAC00) % 28


def with_ro(word: str) -> str:
    """``word`` with the particle 로/으로: "가을 분위기" -> "가을 분위기로", "봄밤" -> "봄밤으로";
    a word ending in 처럼/같이 needs none."""
    word = word.strip()
    if word.endswith(("처럼", "같이", "듯이")) or not word:
        return word
    final = _final_consonant(word[-1])
    return word + ("으로" if final > 0 and final != 8 else "로")


# Korean words -> English ones, for adapter names (a name is lowercase ASCII).
GLOSSARY = {
    "가을": "autumn", "봄": "spring", "여름": "summer", "겨울": "winter", "분위기": "mood", "느낌": "feel",
    "말투": "tone", "문체": "style", "스타일": "style", "어조": "tone", "감성": "mood", "밤": "night", "비오는": "rainy", "빗소리": "rain",
    "바다": "sea", "도시": "city", "시골": "country", "커피": "coffee", "해적": "pirate", "동화": "fairy-tale",
    "시를": "poem", "시로": "poem", "편지": "letter", "일기": "diary", "뉴스": "news", "기사": "article", "논문": "paper",
    "이메일": "email", "메일": "email", "고객": "customer", "문의": "inquiry", "지원": "support", "상담": "support",
    "리뷰": "review", "후기": "review", "영화": "movie", "상품": "product", "제품": "product", "사양": "specs",
    "와인": "wine", "티켓": "ticket", "주문": "order", "배송": "shipping", "환불": "refund", "청구": "billing",
    "버그": "bug", "기타": "other", "감정": "sentiment", "요약": "summary", "회의록": "minutes", "회의": "meeting",
    "공손": "polite", "존댓말": "polite", "반말": "casual", "친근": "friendly", "친절": "kind", "격식": "formal",
    "따뜻": "warm", "유머": "humor", "재미": "fun", "슬픈": "sad", "슬픔": "sad", "행복": "happy", "로맨틱": "romantic",
    "셰익스피어": "shakespeare", "사투리": "dialect", "부산": "busan", "제주": "jeju", "챗봇": "chatbot",
    "코드": "code", "질문": "question", "답변": "answer", "레시피": "recipe", "요리": "cooking", "여행": "travel",
}
_GLOSSARY_KEYS = sorted(GLOSSARY, key=len, reverse=True)  # the longest match first: 이메일 before 메일


def name_words(text: str) -> list[str]:
    """English words for a goal's words, in order: each Korean word by the glossary (the
    longest entry it starts with; unknown ones are skipped), each ASCII word as it is."""
    found: list[str] = []
    for word in text.split():
        for part in re.findall(r"[A-Za-z0-9]+|[\uac00-\ud7a3]+", word):
            if part.isascii():
                found.append(part.lower())
                continue
            key = next((k for k in _GLOSSARY_KEYS if part.startswith(k)), None)
            if key is not None:
                found.append(GLOSSARY[key])
    return found


# --- a Korean goal's plan (backend.training.plan) -------------------------------------------


def korean_system_prompt(kind: str, subject: str, labels: list[str]) -> str:
    """The plan's system prompt for a Korean goal of task ``kind`` (``subject``: the goal
    without the request, :func:`korean_subject`)."""
    if kind == "classification":
        if labels:
            return f"입력을 분류하세요. 다음 라벨 중 하나로만 답하세요: {', '.join(labels)}."
        return "입력을 분류하세요. 라벨만 답하세요."
    if kind == "sentiment":
        return "글의 감정이 긍정, 부정, 중립 중 무엇인지 한 단어로 답하세요."
    if kind == "extraction":
        return "글에서 요청한 정보를 추출해 JSON으로만 답하세요."
    if kind == "summarization":
        return "글을 요약하세요. 핵심만 짧게 쓰세요."
    if kind == "chat":
        if subject.endswith(("챗봇", "어시스턴트", "비서", "상담원")):
            return f"당신은 {subject}입니다."
        return f"당신은 도움이 되는 어시스턴트입니다. {subject}."
    return f"{with_ro(subject)} 글을 쓰세요."


def korean_probes(kind: str, goal: str) -> list[str]:
    """The plan's probe prompts for a Korean goal of task ``kind``, before any data (none for
    a classification whose inputs cannot be guessed: they come from the data)."""
    if kind == "classification":
        if "와인" in goal or "wine" in goal.lower():
            return ["짙은 루비색에 체리와 오크 향이 납니다.", "옅은 볏짚색, 상큼하고 풋사과와 시트러스 향이 나요.",
                    "진한 보라색, 묵직하고 블랙커런트와 담배 향.", "황금빛, 꿀 같은 풍미에 살구 향이 납니다."]
        if any(w in goal.lower() for w in ("이메일", "메일", "문의", "고객", "email", "support", "ticket")):
            return ["이번 달 요금이 두 번 청구됐어요. 하나는 환불해 주실 수 있나요?",
                    "설정 페이지를 열 때마다 앱이 꺼져요.", "학생 할인이 있나요?"]
        return []
    if kind == "sentiment":
        return ["키보드가 조용해서 정말 마음에 들어요.", "배송이 늦었고 상자가 찌그러져 왔어요.",
                "그냥 작동은 해요. 특별한 건 없어요.", "올해 산 것 중 최고예요!"]
    if kind == "extraction":
        return ["무게 2kg, 색상 파랑, 가격 3만 원.", "X200 드릴: 18V 배터리, 1.4kg, 2년 보증.",
                "새 램프는 높이 45cm, 황동 소재이고 가격은 79유로입니다."]
    if kind == "summarization":
        return ["시의회는 화요일에 새 자전거 도로를 논의했다. 두 시간의 토론 끝에 7대 2로 내년 봄까지 중앙로에 "
                "자전거 도로를 만들기로 의결했고, 비용은 교통 예산에서 충당한다.",
                "이번 분기 매출은 아시아 수요 덕분에 12% 늘었고 비용은 그대로였다. 팀은 다음 분기에도 비슷한 성장을 "
                "예상하지만 배송 지연이 성장을 늦출 수 있다고 경고했다.",
                "안녕하세요, 금요일은 점검으로 사무실이 문을 닫습니다. 목요일에 노트북을 챙겨 가시고 VPN을 사용해 "
                "주세요. 헬프데스크는 오후 5시까지 전화로 응대합니다."]
    if kind == "chat":
        return ["안녕하세요! 누구세요?", "주말 계획 세우는 것 좀 도와줄래요?", "재미있는 이야기 하나 해 줘."]
    return ["공원 산책을 묘사해 줘.", "밤의 도시에 대해 두 문장을 써 줘.", "차 한 잔을 묘사해 줘.",
            "친구에게 짧은 쪽지를 써 줘."]
