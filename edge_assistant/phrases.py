"""What the assistant itself says, one table per language: the fixed sentences of
timers, alarms, confirmations, Home Assistant failures and the apology, and the
words that answer "yes or no?".

:func:`say` speaks in the language of the conversation (the one the last reply
was identified in, :func:`edge_assistant.languages.current`). Every table has
every key of the English one (tests/test_languages.py fails on a missing
translation); the languages are those of the voice manifest.
"""

from __future__ import annotations

from typing import Any

ENGLISH = "en"

TABLES: dict[str, dict[str, Any]] = {
    "en": {
        "apology": "Sorry, I couldn't do that.",
        "done": "Done.",
        "declined": "Okay, I won't.",
        "confirm_question": "Should I run {tool}? Say yes or no.",
        "confirm_question_with": "Should I run {tool} with {arguments}? Say yes or no.",
        "timer_done": "Your timer is done.",
        "timer_done_labelled": "Your {label} timer is done.",
        "alarm_ringing": "It's {time}. Your alarm.",
        "alarm_ringing_labelled": "It's {time}. Your {label} alarm.",
        "missed_timer": "While I was off, your timer was due at {time}.",
        "missed_timer_labelled": "While I was off, your {label} timer was due at {time}.",
        "missed_alarm": "While I was off, your alarm was due at {time}.",
        "missed_alarm_labelled": "While I was off, your {label} alarm was due at {time}.",
        "ha_failed": "Home Assistant could not do that.",
        "ha_unreachable": "I can't reach Home Assistant.",
        "ha_token_rejected": "Home Assistant refused my access token.",
        "device_not_found": "I can't find that device.",
        "not_allowed": "I'm not allowed to do that.",
        "device_unavailable": "That device is unavailable right now.",
        "which_one": "Which one: {names} or {last}?",
        "yes_words": ["yes", "yeah", "yep", "yup", "sure", "ok", "okay", "certainly", "affirmative", "correct", "please"],
        "no_words": ["no", "nope", "nah", "don't", "dont", "not", "cancel", "stop", "negative", "never"],
    },
    "de": {
        "apology": "Entschuldigung, das hat nicht geklappt.",
        "done": "Erledigt.",
        "declined": "Gut, dann nicht.",
        "confirm_question": "Soll ich {tool} ausführen? Sag ja oder nein.",
        "confirm_question_with": "Soll ich {tool} mit {arguments} ausführen? Sag ja oder nein.",
        "timer_done": "Dein Timer ist abgelaufen.",
        "timer_done_labelled": "Dein Timer {label} ist abgelaufen.",
        "alarm_ringing": "Es ist {time} Uhr. Dein Wecker.",
        "alarm_ringing_labelled": "Es ist {time} Uhr. Dein Wecker {label}.",
        "missed_timer": "Während ich aus war, ist dein Timer um {time} Uhr abgelaufen.",
        "missed_timer_labelled": "Während ich aus war, ist dein Timer {label} um {time} Uhr abgelaufen.",
        "missed_alarm": "Während ich aus war, hätte dein Wecker um {time} Uhr geklingelt.",
        "missed_alarm_labelled": "Während ich aus war, hätte dein Wecker {label} um {time} Uhr geklingelt.",
        "ha_failed": "Home Assistant konnte das nicht ausführen.",
        "ha_unreachable": "Ich erreiche Home Assistant nicht.",
        "ha_token_rejected": "Home Assistant hat meinen Zugangsschlüssel abgelehnt.",
        "device_not_found": "Dieses Gerät finde ich nicht.",
        "not_allowed": "Das darf ich nicht.",
        "device_unavailable": "Dieses Gerät ist gerade nicht erreichbar.",
        "which_one": "Welches: {names} oder {last}?",
        "yes_words": ["ja", "jawohl", "jep", "klar", "gerne", "bitte", "genau", "richtig", "sicher", "okay"],
        "no_words": ["nein", "nee", "nö", "nicht", "abbrechen", "stopp", "niemals"],
    },
    "fr": {
        "apology": "Désolé, je n'ai pas pu le faire.",
        "done": "C'est fait.",
        "declined": "D'accord, je ne le fais pas.",
        "confirm_question": "Dois-je lancer {tool} ? Réponds oui ou non.",
        "confirm_question_with": "Dois-je lancer {tool} avec {arguments} ? Réponds oui ou non.",
        "timer_done": "Ton minuteur est terminé.",
        "timer_done_labelled": "Ton minuteur {label} est terminé.",
        "alarm_ringing": "Il est {time}. Ton réveil.",
        "alarm_ringing_labelled": "Il est {time}. Ton réveil {label}.",
        "missed_timer": "Pendant que j'étais éteint, ton minuteur a sonné à {time}.",
        "missed_timer_labelled": "Pendant que j'étais éteint, ton minuteur {label} a sonné à {time}.",
        "missed_alarm": "Pendant que j'étais éteint, ton réveil devait sonner à {time}.",
        "missed_alarm_labelled": "Pendant que j'étais éteint, ton réveil {label} devait sonner à {time}.",
        "ha_failed": "Home Assistant n'a pas pu le faire.",
        "ha_unreachable": "Je n'arrive pas à joindre Home Assistant.",
        "ha_token_rejected": "Home Assistant a refusé mon jeton d'accès.",
        "device_not_found": "Je ne trouve pas cet appareil.",
        "not_allowed": "Je n'ai pas le droit de faire ça.",
        "device_unavailable": "Cet appareil n'est pas disponible pour le moment.",
        "which_one": "Lequel : {names} ou {last} ?",
        "yes_words": ["oui", "ouais", "d'accord", "bien", "volontiers", "exactement", "vas-y", "certainement"],
        "no_words": ["non", "nan", "pas", "annule", "arrête", "jamais"],
    },
    "es": {
        "apology": "Lo siento, no he podido hacerlo.",
        "done": "Hecho.",
        "declined": "Vale, no lo hago.",
        "confirm_question": "¿Ejecuto {tool}? Di sí o no.",
        "confirm_question_with": "¿Ejecuto {tool} con {arguments}? Di sí o no.",
        "timer_done": "Tu temporizador ha terminado.",
        "timer_done_labelled": "Tu temporizador {label} ha terminado.",
        "alarm_ringing": "Son las {time}. Tu alarma.",
        "alarm_ringing_labelled": "Son las {time}. Tu alarma {label}.",
        "missed_timer": "Mientras estaba apagado, tu temporizador terminó a las {time}.",
        "missed_timer_labelled": "Mientras estaba apagado, tu temporizador {label} terminó a las {time}.",
        "missed_alarm": "Mientras estaba apagado, tu alarma debía sonar a las {time}.",
        "missed_alarm_labelled": "Mientras estaba apagado, tu alarma {label} debía sonar a las {time}.",
        "ha_failed": "Home Assistant no ha podido hacerlo.",
        "ha_unreachable": "No consigo conectar con Home Assistant.",
        "ha_token_rejected": "Home Assistant ha rechazado mi token de acceso.",
        "device_not_found": "No encuentro ese dispositivo.",
        "not_allowed": "No tengo permiso para hacer eso.",
        "device_unavailable": "Ese dispositivo no está disponible ahora mismo.",
        "which_one": "¿Cuál: {names} o {last}?",
        "yes_words": ["sí", "si", "vale", "claro", "dale", "correcto", "bueno", "adelante"],
        "no_words": ["no", "nunca", "cancela", "para", "tampoco"],
    },
    "it": {
        "apology": "Mi dispiace, non ci sono riuscito.",
        "done": "Fatto.",
        "declined": "Va bene, non lo faccio.",
        "confirm_question": "Devo eseguire {tool}? Rispondi sì o no.",
        "confirm_question_with": "Devo eseguire {tool} con {arguments}? Rispondi sì o no.",
        "timer_done": "Il tuo timer è finito.",
        "timer_done_labelled": "Il tuo timer {label} è finito.",
        "alarm_ringing": "Sono le {time}. La tua sveglia.",
        "alarm_ringing_labelled": "Sono le {time}. La tua sveglia {label}.",
        "missed_timer": "Mentre ero spento, il tuo timer è scaduto alle {time}.",
        "missed_timer_labelled": "Mentre ero spento, il tuo timer {label} è scaduto alle {time}.",
        "missed_alarm": "Mentre ero spento, la tua sveglia doveva suonare alle {time}.",
        "missed_alarm_labelled": "Mentre ero spento, la tua sveglia {label} doveva suonare alle {time}.",
        "ha_failed": "Home Assistant non è riuscito a farlo.",
        "ha_unreachable": "Non riesco a raggiungere Home Assistant.",
        "ha_token_rejected": "Home Assistant ha rifiutato il mio token di accesso.",
        "device_not_found": "Non trovo quel dispositivo.",
        "not_allowed": "Non ho il permesso di farlo.",
        "device_unavailable": "Quel dispositivo al momento non è disponibile.",
        "which_one": "Quale: {names} o {last}?",
        "yes_words": ["sì", "si", "certo", "va", "vai", "esatto", "d'accordo", "ok", "volentieri"],
        "no_words": ["no", "non", "mai", "annulla", "fermati", "basta"],
    },
    "nl": {
        "apology": "Sorry, dat is me niet gelukt.",
        "done": "Klaar.",
        "declined": "Goed, dan niet.",
        "confirm_question": "Zal ik {tool} uitvoeren? Zeg ja of nee.",
        "confirm_question_with": "Zal ik {tool} met {arguments} uitvoeren? Zeg ja of nee.",
        "timer_done": "Je timer is afgelopen.",
        "timer_done_labelled": "Je timer {label} is afgelopen.",
        "alarm_ringing": "Het is {time}. Je wekker.",
        "alarm_ringing_labelled": "Het is {time}. Je wekker {label}.",
        "missed_timer": "Terwijl ik uit stond, is je timer om {time} afgelopen.",
        "missed_timer_labelled": "Terwijl ik uit stond, is je timer {label} om {time} afgelopen.",
        "missed_alarm": "Terwijl ik uit stond, had je wekker om {time} moeten gaan.",
        "missed_alarm_labelled": "Terwijl ik uit stond, had je wekker {label} om {time} moeten gaan.",
        "ha_failed": "Home Assistant kon dat niet doen.",
        "ha_unreachable": "Ik kan Home Assistant niet bereiken.",
        "ha_token_rejected": "Home Assistant heeft mijn toegangstoken geweigerd.",
        "device_not_found": "Ik kan dat apparaat niet vinden.",
        "not_allowed": "Dat mag ik niet doen.",
        "device_unavailable": "Dat apparaat is nu niet beschikbaar.",
        "which_one": "Welke: {names} of {last}?",
        "yes_words": ["ja", "jawel", "jazeker", "graag", "prima", "zeker", "goed", "oké"],
        "no_words": ["nee", "neen", "niet", "nooit", "annuleer", "stop"],
    },
    "pt": {
        "apology": "Desculpe, não consegui fazer isso.",
        "done": "Feito.",
        "declined": "Tudo bem, não vou fazer.",
        "confirm_question": "Devo executar {tool}? Diga sim ou não.",
        "confirm_question_with": "Devo executar {tool} com {arguments}? Diga sim ou não.",
        "timer_done": "Seu temporizador terminou.",
        "timer_done_labelled": "Seu temporizador {label} terminou.",
        "alarm_ringing": "São {time}. Seu alarme.",
        "alarm_ringing_labelled": "São {time}. Seu alarme {label}.",
        "missed_timer": "Enquanto eu estava desligado, seu temporizador terminou às {time}.",
        "missed_timer_labelled": "Enquanto eu estava desligado, seu temporizador {label} terminou às {time}.",
        "missed_alarm": "Enquanto eu estava desligado, seu alarme devia tocar às {time}.",
        "missed_alarm_labelled": "Enquanto eu estava desligado, seu alarme {label} devia tocar às {time}.",
        "ha_failed": "O Home Assistant não conseguiu fazer isso.",
        "ha_unreachable": "Não consigo falar com o Home Assistant.",
        "ha_token_rejected": "O Home Assistant recusou meu token de acesso.",
        "device_not_found": "Não encontro esse dispositivo.",
        "not_allowed": "Não tenho permissão para fazer isso.",
        "device_unavailable": "Esse dispositivo não está disponível agora.",
        "which_one": "Qual: {names} ou {last}?",
        "yes_words": ["sim", "claro", "pode", "certo", "isso", "beleza", "exato"],
        "no_words": ["não", "nao", "nunca", "cancela", "para"],
    },
    "pl": {
        "apology": "Przepraszam, nie udało mi się tego zrobić.",
        "done": "Zrobione.",
        "declined": "Dobrze, nie zrobię tego.",
        "confirm_question": "Czy mam uruchomić {tool}? Powiedz tak lub nie.",
        "confirm_question_with": "Czy mam uruchomić {tool} z {arguments}? Powiedz tak lub nie.",
        "timer_done": "Twój minutnik się skończył.",
        "timer_done_labelled": "Twój minutnik {label} się skończył.",
        "alarm_ringing": "Jest {time}. Twój budzik.",
        "alarm_ringing_labelled": "Jest {time}. Twój budzik {label}.",
        "missed_timer": "Kiedy byłem wyłączony, twój minutnik skończył się o {time}.",
        "missed_timer_labelled": "Kiedy byłem wyłączony, twój minutnik {label} skończył się o {time}.",
        "missed_alarm": "Kiedy byłem wyłączony, twój budzik miał zadzwonić o {time}.",
        "missed_alarm_labelled": "Kiedy byłem wyłączony, twój budzik {label} miał zadzwonić o {time}.",
        "ha_failed": "Home Assistant nie mógł tego zrobić.",
        "ha_unreachable": "Nie mogę połączyć się z Home Assistant.",
        "ha_token_rejected": "Home Assistant odrzucił mój token dostępu.",
        "device_not_found": "Nie mogę znaleźć tego urządzenia.",
        "not_allowed": "Nie wolno mi tego zrobić.",
        "device_unavailable": "To urządzenie jest teraz niedostępne.",
        "which_one": "Które: {names} czy {last}?",
        "yes_words": ["tak", "jasne", "dobrze", "pewnie", "proszę", "zgoda", "oczywiście"],
        "no_words": ["nie", "nigdy", "anuluj", "przestań", "stop"],
    },
    "sv": {
        "apology": "Förlåt, det gick inte.",
        "done": "Klart.",
        "declined": "Okej, då låter jag bli.",
        "confirm_question": "Ska jag köra {tool}? Svara ja eller nej.",
        "confirm_question_with": "Ska jag köra {tool} med {arguments}? Svara ja eller nej.",
        "timer_done": "Din timer är klar.",
        "timer_done_labelled": "Din timer {label} är klar.",
        "alarm_ringing": "Klockan är {time}. Ditt alarm.",
        "alarm_ringing_labelled": "Klockan är {time}. Ditt alarm {label}.",
        "missed_timer": "Medan jag var avstängd gick din timer ut klockan {time}.",
        "missed_timer_labelled": "Medan jag var avstängd gick din timer {label} ut klockan {time}.",
        "missed_alarm": "Medan jag var avstängd skulle ditt alarm ha ringt klockan {time}.",
        "missed_alarm_labelled": "Medan jag var avstängd skulle ditt alarm {label} ha ringt klockan {time}.",
        "ha_failed": "Home Assistant kunde inte göra det.",
        "ha_unreachable": "Jag når inte Home Assistant.",
        "ha_token_rejected": "Home Assistant avvisade min åtkomsttoken.",
        "device_not_found": "Jag hittar inte den enheten.",
        "not_allowed": "Det får jag inte göra.",
        "device_unavailable": "Den enheten är inte tillgänglig just nu.",
        "which_one": "Vilken: {names} eller {last}?",
        "yes_words": ["ja", "japp", "visst", "absolut", "gärna", "okej", "självklart", "javisst"],
        "no_words": ["nej", "nä", "inte", "aldrig", "avbryt", "sluta"],
    },
}

LANGUAGES = tuple(TABLES)


def say(key: str, language: str | None = None, **fields: Any) -> str:
    """The sentence ``key`` in ``language`` (default: the conversation's), with
    ``fields`` filled in."""
    if language is None:
        from .languages import current

        language = current()
    table = TABLES.get(language, TABLES[ENGLISH])
    return str(table[key]).format(**fields)


def answer_words(key: str) -> frozenset[str]:
    """``yes_words`` or ``no_words`` of every table: the model may write its
    one-word decision in the user's language or in English."""
    return frozenset(word for table in TABLES.values() for word in table[key])


def reminder_sentence(kind: str, label: str, time: str, missed: bool = False) -> str:
    """What a timer or alarm says when it comes due (``missed``: it came due
    while the assistant was not running)."""
    if missed:
        key = f"missed_{'alarm' if kind == 'alarm' else 'timer'}"
    else:
        key = "alarm_ringing" if kind == "alarm" else "timer_done"
    return say(key + ("_labelled" if label else ""), label=label, time=time)


class Phrase:
    """A class attribute that reads as the sentence ``key`` in the conversation's
    language (``spoken = Phrase("ha_unreachable")`` on an error class)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, instance: object, owner: type | None = None) -> str:
        return say(self.key)
