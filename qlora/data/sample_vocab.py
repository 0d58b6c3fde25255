"""Templates and slot words of the sample domains.

Small on purpose: a ~1-5M-parameter model must learn them. Every answer is fixed per
topic (text and JSON) or fixed per language (refusal), and the prompt phrasings vary,
so a model that learned the task answers unseen phrasings of seen topics.
"""
from __future__ import annotations

from dataclasses import dataclass

REFUSAL_KO = "죄송하지만 그 요청은 도와드릴 수 없습니다."
REFUSAL_EN = "Sorry, I can't help with that."


@dataclass(frozen=True)
class Language:
    code: str
    prefixes: tuple[str, ...]
    explain_prompts: tuple[str, ...]  # {t}: topic
    json_prompts: tuple[str, ...]
    refuse_prompts: tuple[str, ...]  # {x}: harmful act
    topics: dict  # topic -> (text answer, JSON answer object)
    harms: tuple[str, ...]
    refusal: str
    system: str


LEGAL = Language(
    code="ko",
    prefixes=("", "안녕하세요. "),
    explain_prompts=(
        "다음 법률 용어의 뜻을 일반인도 이해할 수 있게 짧게 설명해 주세요. 용어: {t}",
        "법률 상담 중에 나온 '{t}' 라는 용어가 무슨 뜻인지 간단히 알려 주세요.",
        "'{t}' 에 대해 법률을 처음 배우는 사람에게 한 문장으로 설명해 주세요.",
        "계약서를 읽다가 '{t}' 라는 말이 나왔습니다. 그 뜻을 짧게 설명해 주세요.",
        "우리 법에서 말하는 '{t}' 의 의미를 쉬운 말로 한 문장으로 정리해 주세요.",
        "'{t}' 라는 법률 용어를 잘 모르겠습니다. 쉽게 풀어서 설명해 주시겠어요?",
    ),
    json_prompts=(
        "다음 상담 내용을 읽고 법률 분야와 주제를 JSON 형식으로 분류해 주세요. 내용: {t} 관련 문제로 상담을 받고 싶습니다.",
        "아래 문의의 법률 분야를 JSON으로만 답해 주세요. 문의: {t} 때문에 변호사와 이야기하고 싶어요.",
        "JSON 형식으로 답하세요. 키는 분야와 주제입니다. 질문: {t} 사건은 어느 분야인가요?",
        "상담 분류 작업입니다. '{t}' 에 관한 상담을 분야와 주제로 나누어 JSON 으로 출력해 주세요.",
    ),
    refuse_prompts=(
        "소송 상대방이 모르게 {x} 방법을 단계별로 자세히 알려 주세요.",
        "경찰에 걸리지 않고 {x} 방법이 있으면 구체적으로 설명해 주세요.",
        "재판에서 꼭 이기려고 합니다. {x} 가장 좋은 방법을 알려 주세요.",
        "법망을 교묘하게 피해서 {x} 요령을 하나씩 차례대로 알려 주세요.",
        "아무도 모르게 {x} 방법을 친구에게 알려 주려고 합니다. 자세히 써 주세요.",
    ),
    topics={
        "임대차": ("임대차는 물건을 빌려주고 그 대가로 차임을 받기로 하는 계약입니다.", {"분야": "민사", "주제": "임대차"}),
        "매매": ("매매는 재산권을 넘기고 그 대가로 대금을 받기로 하는 계약입니다.", {"분야": "민사", "주제": "매매"}),
        "증여": ("증여는 자기 재산을 대가 없이 상대방에게 주기로 하는 계약입니다.", {"분야": "민사", "주제": "증여"}),
        "소멸시효": ("소멸시효는 권리를 일정 기간 행사하지 않으면 그 권리가 사라지는 제도입니다.", {"분야": "민사", "주제": "소멸시효"}),
        "상속": ("상속은 사람이 사망하면 그 재산과 채무가 상속인에게 넘어가는 것입니다.", {"분야": "가사", "주제": "상속"}),
        "이혼": ("이혼은 부부가 협의나 재판을 통해 혼인 관계를 끝내는 것입니다.", {"분야": "가사", "주제": "이혼"}),
        "사기": ("사기는 사람을 속여 재물이나 재산상 이익을 얻는 범죄입니다.", {"분야": "형사", "주제": "사기"}),
        "절도": ("절도는 다른 사람의 물건을 몰래 가져가는 범죄입니다.", {"분야": "형사", "주제": "절도"}),
        "부당해고": ("부당해고는 정당한 이유나 절차 없이 근로자를 해고하는 것입니다.", {"분야": "노동", "주제": "부당해고"}),
        "임금체불": ("임금체불은 사용자가 근로자에게 임금을 제때 지급하지 않는 것입니다.", {"분야": "노동", "주제": "임금체불"}),
        "특허": ("특허는 새로운 발명을 일정 기간 독점적으로 사용할 수 있는 권리입니다.", {"분야": "지식재산", "주제": "특허"}),
        "저작권": ("저작권은 창작한 저작물을 만든 사람이 독점적으로 이용할 수 있는 권리입니다.", {"분야": "지식재산", "주제": "저작권"}),
    },
    harms=("증거를 조작하는", "가짜 계약서를 만드는", "세금을 몰래 숨기는", "증인을 협박하는", "판사에게 뇌물을 주는", "남의 재산을 빼돌리는"),
    refusal=REFUSAL_KO,
    system="당신은 친절한 법률 상담 도우미입니다.",
)

MEDICAL = Language(
    code="ko",
    prefixes=("", "안녕하세요. "),
    explain_prompts=(
        "다음 질환을 환자가 이해하기 쉽게 짧게 설명해 주세요. 질환: {t}",
        "진료 중에 들은 '{t}' 라는 병이 어떤 병인지 간단히 알려 주세요.",
        "'{t}' 에 대해 의학 지식이 없는 사람에게 한 문장으로 설명해 주세요.",
        "건강 검진 결과지에 '{t}' 라고 적혀 있습니다. 어떤 뜻인지 짧게 알려 주세요.",
        "가족이 '{t}' 진단을 받았습니다. 이 병이 무엇인지 쉽게 설명해 주세요.",
        "'{t}' 이 무엇인지 보건 교육 자료처럼 한 문장으로 정리해 주세요.",
    ),
    json_prompts=(
        "다음 내용을 보고 진료과와 응급 여부를 JSON 형식으로 답해 주세요. 내용: {t} 이 의심되는 환자입니다.",
        "환자 분류 작업입니다. '{t}' 환자를 어느 진료과로 보내야 하는지 JSON으로 답해 주세요.",
        "JSON 형식으로만 답하세요. 키는 진료과와 응급입니다. 질문: {t} 증상이 있으면 어디로 가나요?",
        "접수 창구에 '{t}' 환자가 왔습니다. 진료과와 응급 여부를 JSON 으로 출력해 주세요.",
    ),
    refuse_prompts=(
        "{x} 방법을 단계별로 자세히 알려 주세요. 꼭 필요합니다.",
        "아무에게도 들키지 않고 {x} 방법을 구체적으로 하나씩 설명해 주세요.",
        "급하게 필요합니다. {x} 가장 쉬운 방법을 알려 주세요.",
        "병원에 가지 않고 {x} 요령을 하나씩 차례대로 알려 주세요.",
        "친구를 도와주려고 합니다. {x} 방법을 자세히 써 주세요.",
    ),
    topics={
        "감기": ("감기는 바이러스가 코와 목에 일으키는 가벼운 감염이며 충분히 쉬면 대부분 낫습니다.", {"진료과": "내과", "응급": False}),
        "독감": ("독감은 인플루엔자 바이러스가 일으키는 병으로 고열과 근육통이 나타납니다.", {"진료과": "내과", "응급": False}),
        "고혈압": ("고혈압은 혈관 속 압력이 계속 높은 상태로 꾸준한 관리가 필요합니다.", {"진료과": "내과", "응급": False}),
        "당뇨병": ("당뇨병은 혈액 속 당을 잘 조절하지 못하는 병으로 식사와 운동 관리가 중요합니다.", {"진료과": "내과", "응급": False}),
        "위염": ("위염은 위 점막에 염증이 생긴 상태로 속쓰림과 복통이 나타납니다.", {"진료과": "내과", "응급": False}),
        "편두통": ("편두통은 머리 한쪽이 욱신거리며 아픈 두통으로 빛과 소리에 예민해집니다.", {"진료과": "신경과", "응급": False}),
        "천식": ("천식은 기관지가 좁아져 숨이 차고 쌕쌕거리는 소리가 나는 병입니다.", {"진료과": "호흡기내과", "응급": False}),
        "골절": ("골절은 뼈가 부러지거나 금이 간 상태로 움직이지 말고 병원에 가야 합니다.", {"진료과": "정형외과", "응급": True}),
        "화상": ("화상은 열이나 화학 물질로 피부가 다친 상태로 먼저 찬물로 식혀야 합니다.", {"진료과": "응급의학과", "응급": True}),
        "불면증": ("불면증은 잠들기 어렵거나 자주 깨는 상태가 계속되는 수면 장애입니다.", {"진료과": "정신건강의학과", "응급": False}),
        "빈혈": ("빈혈은 혈액 속 적혈구가 부족해 쉽게 피로하고 어지러운 상태입니다.", {"진료과": "내과", "응급": False}),
        "뇌졸중": ("뇌졸중은 뇌혈관이 막히거나 터진 응급 상황으로 즉시 병원에 가야 합니다.", {"진료과": "신경과", "응급": True}),
    },
    harms=("처방전 없이 마약성 진통제를 구하는", "의사 소견서를 위조하는", "보험금을 타려고 진단서를 꾸미는",
           "다른 사람 몰래 수면제를 먹이는", "불법 약물을 몰래 구하는", "진료 기록을 몰래 지우는"),
    refusal=REFUSAL_KO,
    system="당신은 친절한 의료 상담 도우미입니다.",
)

_CS_TOPICS = {  # slug -> (Korean name, Korean answer, English name, English answer, category, priority)
    "password": ("비밀번호 재설정", "로그인 화면에서 비밀번호 찾기를 누르고 메일로 받은 링크에서 새 비밀번호를 설정해 주세요.",
                 "password reset", "Click Forgot password on the login page and set a new password from the link in your mail.", "normal"),
    "refund": ("환불", "환불은 주문 내역에서 환불 신청을 누르면 접수되며 영업일 기준 사흘 안에 처리됩니다.",
               "a refund", "Open your order history and choose Request refund; refunds are done within three business days.", "high"),
    "delivery": ("배송 지연", "배송 현황은 주문 내역의 배송 조회에서 확인하실 수 있으며 지연되면 문자로 안내해 드립니다.",
                 "a late delivery", "You can track your parcel in your order history, and we will text you if it is late.", "normal"),
    "cancel": ("주문 취소", "주문 취소는 상품 발송 전까지 주문 내역에서 취소 버튼을 눌러 직접 하실 수 있습니다.",
               "cancelling an order", "You can cancel an order from your order history until the item has been shipped.", "normal"),
    "exchange": ("교환", "교환은 상품을 받은 뒤 일주일 안에 주문 내역에서 교환 신청을 하시면 됩니다.",
                 "an exchange", "Request an exchange from your order history within seven days of receiving the item.", "normal"),
    "account": ("회원 탈퇴", "회원 탈퇴는 내 정보 메뉴 맨 아래에 있는 탈퇴하기 버튼에서 하실 수 있습니다.",
                "deleting my account", "You can delete your account with the Delete account button at the bottom of My page.", "low"),
    "coupon": ("쿠폰 사용", "쿠폰은 결제 화면의 쿠폰 적용 칸에서 선택하시면 할인 금액이 바로 반영됩니다.",
               "using a coupon", "Choose your coupon in the coupon field at checkout and the discount is applied at once.", "low"),
    "payment": ("결제 오류", "결제 오류가 나면 카드사 승인 내역을 확인해 주세요. 중복 결제는 자동으로 취소됩니다.",
                "a payment error", "If a payment fails, check the approval history with your card company; double charges are cancelled.", "high"),
}
CS_KO = Language(
    code="ko",
    prefixes=("", "안녕하세요. "),
    explain_prompts=(
        "고객센터 문의입니다. '{t}' 은 어떻게 하면 되나요? 방법을 짧게 알려 주세요.",
        "'{t}' 관련해서 궁금한 점이 있습니다. 절차를 간단히 안내해 주세요.",
        "앱에서 '{t}' 을 하고 싶은데 어디서 해야 하는지 알려 주세요.",
        "'{t}' 방법을 처음 이용하는 고객에게 설명하듯이 안내해 주세요.",
        "쇼핑몰 이용 중 '{t}' 문제로 문의드립니다. 어떻게 처리하면 되나요?",
    ),
    json_prompts=(
        "다음 고객 문의를 분류해서 category 와 priority 를 JSON으로 답해 주세요. 문의: {t} 관련 문의입니다.",
        "상담 티켓 분류 작업입니다. '{t}' 에 관한 티켓의 category 와 priority 를 JSON 으로 출력해 주세요.",
        "JSON 형식으로만 답하세요. 고객이 '{t}' 때문에 연락했습니다. 이 문의의 분류는 무엇인가요?",
    ),
    refuse_prompts=(
        "관리자 권한으로 {x} 방법을 자세히 알려 주세요. 지금 바로 필요합니다.",
        "회사 직원들 몰래 {x} 방법을 단계별로 설명해 주세요.",
        "정말 급합니다. {x} 가장 빠른 방법을 하나씩 알려 주세요.",
        "시스템의 허점을 이용해서 {x} 요령을 하나씩 알려 주세요.",
    ),
    topics={v[0]: (v[1], {"category": k, "priority": v[4]}) for k, v in _CS_TOPICS.items()},
    harms=("다른 고객의 개인정보를 조회하는", "남의 계정에 몰래 로그인하는", "쿠폰을 무한으로 복제하는",
           "결제 없이 상품을 빼돌리는", "가짜 리뷰를 대량으로 올리는"),
    refusal=REFUSAL_KO,
    system="당신은 친절한 쇼핑몰 고객센터 상담원입니다.",
)
CS_EN = Language(
    code="en",
    prefixes=("", "Hello. "),
    explain_prompts=(
        "Customer question: how do I handle {t} in the app? Please explain briefly.",
        "I need help with {t}. Could you tell me the steps in one short answer?",
        "Please explain to a new customer what to do about {t} in our shop.",
        "What should I do about {t}? Give me a short and simple answer please.",
        "Hi there, I have a question about {t}. Where can I do this on the website?",
    ),
    json_prompts=(
        "Classify this customer message and answer in JSON with category and priority. Message: I have a question about {t}.",
        "Ticket triage task. Output the category and priority of a ticket about {t} as JSON.",
        "Answer only in JSON format. A customer contacted us about {t}. How is this ticket classified?",
    ),
    refuse_prompts=(
        "Tell me step by step how to {x} without anyone noticing.",
        "As an admin, explain in detail how to {x} right now.",
        "It is urgent. What is the fastest way to {x} today?",
        "Use a bug in the system and show me how to {x} quickly.",
    ),
    topics={v[2]: (v[3], {"category": k, "priority": v[4]}) for k, v in _CS_TOPICS.items()},
    harms=("look up another customer's personal data", "log in to someone else's account", "copy coupons without limit",
           "take products without paying", "post fake reviews in bulk"),
    refusal=REFUSAL_EN,
    system="You are a friendly customer support agent for an online shop.",
)

DOMAINS: dict[str, tuple[Language, ...]] = {"legal-ko": (LEGAL,), "medical-ko": (MEDICAL,), "cs-support": (CS_KO, CS_EN)}
