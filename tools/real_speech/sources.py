"""Real recordings from Debian packages, several languages and speakers (issue #19).

All are natural recordings of people (voice actors, volunteers, readers), none synthetic. None
is copied into the repository: tools/setup_env.sh installs the packages (DEBIAN_PACKAGES below)
and the tool reads them from /usr/share; a missing package is reported with its install command.

| source (Debian package) | language, speaker | band | licence |
| --- | --- | --- | --- |
| asterisk-core-sounds-{en,es,fr,it,ru}-g722 | en-US Allison Smith (f), es-MX Allison Smith (f), fr-CA June Wallack (f), it-IT Carlo Flora (m), ru-RU IvrvoiceRU (f) | G.722 at 16 kHz (wideband, 50-7000 Hz) | CC-BY-SA-3.0 (ru: CC-BY-3.0) |
| asterisk-prompt-it-menardi-wav | it-IT, Menardi voice (f) | 8 kHz WAV (telephone, native) | CC-BY-SA-3.0 |
| asterisk-prompt-es-co | es-CO, July E. Jimenez (f) | 8 kHz GSM 06.10 (telephone, native) | GPL-2 |
| asterisk-prompt-fr-armelle | fr-FR, Armelle Desjardins (f) | 8 kHz GSM 06.10 (telephone, native) | BSD-style (notice kept) |
| pocketsphinx-testdata | en-US: a LibriVox reader ("Sense and Sensibility", public domain) and the CMU test voices | 16 kHz WAV/raw (wideband) | BSD-2 (CMU) |
| klettres-data | KLettres syllables/words read by native speakers: de, es, it, ru, en | 44.1 kHz Ogg Vorbis (wideband) | GPL-2+ |

Core-sounds transcripts are those of the packages' core-sounds-LANG.txt (asterisk-core-sounds-LANG,
CC-BY-SA-3.0), with the Spanish accents the file omits restored; KLettres transcripts come from
its sounds.xml; PocketSphinx's from its test transcription files.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ASTERISK = Path("/usr/share/asterisk/sounds")
POCKETSPHINX_TEST = Path("/usr/share/pocketsphinx/test/data")
KLETTRES = Path("/usr/share/klettres")
DEBIAN_PACKAGES = (
    "asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722", "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-it-g722", "asterisk-core-sounds-ru-g722", "asterisk-prompt-it-menardi-wav",
    "asterisk-prompt-es-co", "asterisk-prompt-fr-armelle", "pocketsphinx-testdata", "klettres-data",
)
INSTALL_HINT = "apt-get install " + " ".join(DEBIAN_PACKAGES) + " (tools/setup_env.sh does it as root)"

# Asterisk core sounds: one speaker per language, the same eight prompts in every language.
CORE_VOICES = {
    "en": ("en_US_f_Allison", "Allison Smith, US English female", "CC-BY-SA-3.0 (Allison Smith / Digium)"),
    "es": ("es_MX_f_Allison", "Allison Smith, Mexican Spanish female", "CC-BY-SA-3.0 (Allison Smith / Digium)"),
    "fr": ("fr_CA_f_June", "June Wallack, Canadian French female", "CC-BY-SA-3.0 (June Wallack / Digium)"),
    "it": ("it_IT_m_Carlo", "Carlo Flora, Italian male", "CC-BY-SA-3.0 (Carlo Flora)"),
    "ru": ("ru_RU_f_IvrvoiceRU", "Maxim Topal's ivrvoice.ru voice, Russian female",
           "CC-BY-3.0 (Maxim Topal, ivrvoice.ru)"),
}
CORE_PROMPTS = ("agent-pass", "conf-onlyperson", "vm-nobodyavail", "vm-invalidpassword", "tt-weasels",
                "vm-savefolder", "conf-waitforleader", "vm-mismatch")
CORE_TRANSCRIPTS = {
    ("en", "agent-pass"): "Please enter your password followed by the pound key.",
    ("en", "conf-onlyperson"): "You are currently the only person in this conference.",
    ("en", "vm-nobodyavail"): "Nobody is available to take your call at the moment",
    ("en", "vm-invalidpassword"): "That is not a valid password.  Please try again.",
    ("en", "tt-weasels"): "Weasels have eaten our phone system",
    ("en", "vm-savefolder"): "Which folder should I save the message to?",
    ("en", "conf-waitforleader"): "The conference will begin when the leader arrives.",
    ("en", "vm-mismatch"): "The passwords you entered and re-entered did not match.  Please try again.",
    ("es", "agent-pass"): "Por favor ingrese su contraseña seguida por la tecla de número",
    ("es", "conf-onlyperson"): "Por el momento, usted es la única persona en la conferencia.",
    ("es", "vm-nobodyavail"): "En este momento nadie está libre para responder a su llamada",
    ("es", "vm-invalidpassword"): "contraseña incorrecta. Por favor, intente de nuevo",
    ("es", "tt-weasels"): "Las comadrejas se han comido nuestro sistema telefónico.",
    ("es", "vm-savefolder"): "En qué carpeta desea guardar el mensaje?",
    ("es", "conf-waitforleader"): "La conferencia comenzará cuando llegue el líder.",
    ("es", "vm-mismatch"): "Las contraseñas que usted tecleó no coinciden. Por favor intente de nuevo.",
    ("fr", "agent-pass"): "Composez votre mot de passe suivi du dièse.",
    ("fr", "conf-onlyperson"): "Vous êtes présentement le seul participant dans cette conférence.",
    ("fr", "vm-nobodyavail"): "Personne n'est en mesure de prendre votre appel en ce moment.",
    ("fr", "vm-invalidpassword"): "Ceci n'est pas un mot de passe valide. Veuillez essayer de nouveau.",
    ("fr", "tt-weasels"): "Des fouineurs ont mangé notre système téléphonique.",
    ("fr", "vm-savefolder"): "Dans quel dossier souhaitez-vous conserver ce message?",
    ("fr", "conf-waitforleader"): "La conférence débutera dès l'arrivé du responsable.",
    ("fr", "vm-mismatch"): "Les mots de passes que vous avez entrés ne correspondent pas.  "
                           "Veuillez essayer de nouveau.",
    ("it", "agent-pass"): "Prego digitare la propria password seguita dal tasto cancelletto.",
    ("it", "conf-onlyperson"): "Attualmente sei l'unica persona in questa conferenza.",
    ("it", "vm-nobodyavail"): "Al momento nessuno degli operatori è in grado di rispondere alla sua chiamata.",
    ("it", "vm-invalidpassword"): "Questa non è una password valida. Prego riprovare.",
    ("it", "tt-weasels"): "Le donnole hanno mangiato il nostro sistema telefonico",
    ("it", "vm-savefolder"): "In quale cartella devo salvare il messaggio?",
    ("it", "conf-waitforleader"): "La conferenza avrà inizio all'arrivo del moderatore.",
    ("it", "vm-mismatch"): "La password immessa e quella re-immessa non corrispondono. Prego riprovare.",
    ("ru", "agent-pass"): "Введите пароль и нажмите решетку.",
    ("ru", "conf-onlyperson"): "Вы являетесь первым участником конференции",
    ("ru", "vm-nobodyavail"): "В данный момент никто не может принять Ваш звонок.",
    ("ru", "vm-invalidpassword"): "Это неверный пароль. Пожалуйста, попробуйте еще раз",
    ("ru", "tt-weasels"): "Нашу телефонную систему съели совы",
    ("ru", "vm-savefolder"): "В какой директории сохранить сообщение?",
    ("ru", "conf-waitforleader"): "Конференция начнётся после прихода её инициатора.",
    ("ru", "vm-mismatch"): "Введенные пароли не совпадают. Пожалуйста, введите пароли еще раз.",
}
# Other Asterisk voices, distributed at 8 kHz only (telephone band as recorded); no transcript is
# published for these takes, so they serve the lag and rest measures, not the bilabial one.
NATIVE_TELEPHONE = (
    ("it", ASTERISK / "it_IT_f_Menardi", "wav", "asterisk-prompt-it-menardi-wav",
     "it_IT_f_Menardi voice (credited: Marco Menardi, Paola Dal Zot), Italian female", "CC-BY-SA-3.0 (Marco Menardi)"),
    ("es", ASTERISK / "es", "gsm", "asterisk-prompt-es-co",
     "July E. Jiménez (Avatar Ltda.), Colombian Spanish female", "GPL-2"),
    ("fr", ASTERISK / "fr", "gsm", "asterisk-prompt-fr-armelle",
     "Armelle Desjardins, French female", "BSD-style (Michel Gutierrez; notice kept)"),
)
NATIVE_PROMPTS = ("agent-pass", "vm-nobodyavail", "conf-onlyperson", "vm-goodbye")
# PocketSphinx test data: (path under POCKETSPHINX_TEST, transcript, speaker).
POCKETSPHINX_CLIPS = (
    ("librivox/sense_and_sensibility_01_austen_64kb-0870.wav", None, "LibriVox reader"),
    ("librivox/sense_and_sensibility_01_austen_64kb-0880.wav", None, "LibriVox reader"),
    ("librivox/sense_and_sensibility_01_austen_64kb-0890.wav", None, "LibriVox reader"),
    ("librivox/sense_and_sensibility_01_austen_64kb-0920.wav", None, "LibriVox reader"),
    ("librivox/sense_and_sensibility_01_austen_64kb-0930.wav", None, "LibriVox reader"),
    ("goforward.raw", "go forward ten meters", "CMU test voice (goforward)"),
    ("cards/001.wav", None, "CMU test voice (cards)"),
    ("cards/003.wav", None, "CMU test voice (cards)"),
    ("cards/005.wav", None, "CMU test voice (cards)"),
)
# KLettres: syllables and short words with a bilabial, per language (file stems).
KLETTRES_CLIPS = {
    "de": ("baer", "bus", "opa", "pute"),
    "es": ("ba", "pa", "ma", "mo"),
    "it": ("ba", "pa", "ma", "mu"),
    "ru": ("ba", "pa", "ma", "miu"),
    "en": ("me", "my", "pet"),
}


@dataclass(frozen=True)
class PackagedClip:
    name: str
    original: Path  # file in the installed package
    kind: str  # "g722", "sox" (anything sox reads), "raw16k" (headerless 16-bit 16 kHz)
    language: str
    band: str  # "wideband" or "telephone-native"
    package: str
    speaker: str
    licence: str
    transcript: str | None


def _pocketsphinx_transcripts() -> dict[str, str]:
    """{'librivox/<id>.wav' or 'cards/<id>.wav': transcript} from the test data's files."""
    found = {}
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = POCKETSPHINX_TEST / folder / listing
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
            if match:
                found[f"{folder}/{match.group(2).strip()}.wav"] = " ".join(match.group(1).split())
    return found


def _klettres_transcripts(language: str) -> dict[str, str]:
    path = KLETTRES / language / "sounds.xml"
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    return {Path(f).stem: name.strip().lower()
            for name, f in re.findall(r'<sound\s+name="([^"]+)"\s+file="[^"]*?/?syllab/([^"]+)"', text)}


def packaged_clips() -> tuple[list[PackagedClip], list[str]]:
    """(clips whose files are installed, missing packages)."""
    clips, missing = [], []
    for language, (folder, speaker, licence) in CORE_VOICES.items():
        package = f"asterisk-core-sounds-{language}-g722"
        found = False
        for prompt in CORE_PROMPTS:
            path = ASTERISK / folder / f"{prompt}.g722"
            if path.is_file():
                found = True
                clips.append(PackagedClip(f"ast_{language}_{prompt}", path, "g722", language, "wideband",
                                          package, speaker, licence, CORE_TRANSCRIPTS[(language, prompt)]))
        if not found:
            missing.append(package)
    for language, folder, extension, package, speaker, licence in NATIVE_TELEPHONE:
        paths = [folder / f"{prompt}.{extension}" for prompt in NATIVE_PROMPTS]
        paths = [p for p in paths if p.is_file()]
        if not paths:
            missing.append(package)
        short = package.replace("asterisk-prompt-", "").replace("-wav", "")
        for path in paths:
            clips.append(PackagedClip(f"ast8k_{short}_{path.stem}", path, "sox", language,
                                      "telephone-native", package, speaker, licence, None))
    transcripts = _pocketsphinx_transcripts()
    if not (POCKETSPHINX_TEST / "goforward.raw").is_file():
        missing.append("pocketsphinx-testdata")
    for relative, transcript, speaker in POCKETSPHINX_CLIPS:
        path = POCKETSPHINX_TEST / relative
        if path.is_file():
            stem = Path(relative).stem.replace("sense_and_sensibility_01_austen_64kb-", "librivox_")
            prefix = "cards_" if relative.startswith("cards/") else ""
            clips.append(PackagedClip(
                f"ps_{prefix}{stem}", path, "raw16k" if relative.endswith(".raw") else "sox", "en",
                "wideband", "pocketsphinx-testdata", speaker,
                "public domain (LibriVox); package BSD-2 (CMU)" if "librivox" in relative else "BSD-2 (CMU)",
                transcript or transcripts.get(relative)))
    any_klettres = False
    for language, stems in KLETTRES_CLIPS.items():
        texts = _klettres_transcripts(language)
        for stem in stems:
            path = KLETTRES / language / "syllab" / f"{stem}.ogg"
            if path.is_file():
                any_klettres = True
                clips.append(PackagedClip(f"klettres_{language}_{stem}", path, "sox", language, "wideband",
                                          "klettres-data", f"KLettres {language} speaker",
                                          "GPL-2+ (KDE KLettres)", texts.get(stem)))
    if not any_klettres:
        missing.append("klettres-data")
    return clips, missing


def decode_to_wav(clip: PackagedClip, target: Path) -> Path:
    """The packaged file as 16 kHz mono 16-bit WAV (cached: decoded once)."""
    import soundfile

    target = Path(target)
    if target.is_file() and target.stat().st_mtime >= clip.original.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part.wav")
    if clip.kind == "g722":
        import G722  # PyPI G722 (sippy libg722): Asterisk's .g722 is 64 kbit/s G.722, 16 kHz

        pcm = np.asarray(G722.G722(16000, 64000).decode(clip.original.read_bytes()), np.int16)
        soundfile.write(str(partial), pcm, 16000, subtype="PCM_16")
    elif clip.kind == "raw16k":
        pcm = np.fromfile(clip.original, dtype="<i2")
        soundfile.write(str(partial), pcm, 16000, subtype="PCM_16")
    else:
        subprocess.run(["sox", "-V1", str(clip.original), "-c", "1", "-b", "16", str(partial),
                        "rate", "-v", "16000"], check=True, capture_output=True)
    partial.replace(target)
    return target
