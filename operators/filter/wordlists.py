"""Word lists written for thresher.

Stop words: the most frequent function words of each language (articles, pronouns, auxiliaries,
prepositions, conjunctions), lower-case. They are used as evidence that a text is running prose
in that language, in the spirit of Gopher's stop-word rule (Rae et al. 2021, App. A.1.1), not as
complete stop lists.

Flagged words: adult-content and spam vocabulary whose density marks pages to drop, as C4's
"bad words" rule and Data-Juicer's flagged_words_filter do. It is short on purpose; replace it
with your own list (one word per line) through the op's ``words_file`` parameter.
"""

STOP_WORDS: dict[str, str] = {
    "en": """the be to of and a in that have i it for not on with he as you do at this but his by from they we say
        her she or an will my one all would there their what so up out if about who get which go me when make can
        like no just him know take into your some could them see other than then now only its over also after
        how our well way even because any these us is are was were been has had did""",
    "de": """der die das und in zu den von mit sich des auf für ist im dem nicht ein eine als auch es an werden aus
        er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben nur oder aber vor
        zur bis mehr durch man dann soll ich wir ihr wenn""",
    "fr": """le la les de des du un une et en à au aux est que qui dans pour par sur pas plus ne se ce il elle
        ils nous vous avec son sa ses leur mais ou comme été être avoir fait tout cette sont ont on je y""",
    "es": """el la los las de del y en a que es se no un una por con para su sus al lo como más pero le ya o este
        esta fue ha son está también muy me sin sobre entre cuando todo ser hay dos desde nos""",
    "it": """il lo la i gli le di del della dei e è in a da per con su che non un una si come anche più ma sono
        al alla nel nella ha questo questa ci ne essere stato tra dopo""",
    "pt": """o a os as de do da dos das e em no na nos nas um uma que é para por com não se mais como mas foi ao
        seu sua ou ser quando muito já também só pelo pela entre""",
    "nl": """de het een en van in is dat op te zijn met voor niet aan er die ook als bij door maar om dan nog wordt
        hij zij ze was werd naar uit over tot worden of wel heeft hebben""",
    "sv": """och i att det som en på är av för med till den har de inte om ett men var jag sig från vi så kan man
        eller när hade nu efter upp ut också vid""",
    "da": """og i at det en den til er som på de med han af for ikke der var mig sig men et har om vi min havde
        ham hun nu over da fra du ud sin dem os op""",
    "no": """og i det er som en på til av at for med har de ikke den var jeg om et men seg fra vi kan man eller
        når hadde nå etter opp ut også ved""",
    "fi": """ja on ei se että hän oli ole mutta kun niin joka myös sen tai kuin ovat olla jo vain hänen mitä
        nyt voi sitten koska ne me te he tämä sitä""",
    "pl": """i w z na do się nie to że jest o a jak po co ale od za dla tak przez czy już tylko jego jej są być
        był była było może oraz ten ta te""",
    "cs": """a v se na je že s z do o to i k jako by ale za pro jsou od po jeho který která které tak byl bylo
        jen ve už nebo ze při""",
    "ru": """и в не на я что он с как а то все она так его но да ты к у же вы за бы по только ее мне было вот
        от меня еще нет о из ему теперь когда это""",
    "tr": """ve bir bu da de için ile çok ne daha gibi o ama en her şey olarak kadar ben sen biz onlar var yok
        mi mı ki diye sonra ise""",
    "id": """yang dan di ke dari ini itu dengan untuk tidak dalam akan pada juga ada adalah saya kami mereka
        atau oleh sudah karena bisa lebih telah""",
}

FLAGGED_WORDS: dict[str, str] = {
    "en": """porn porno pornography xxx nsfw nude nudes naked sex sexy sexual hardcore softcore erotic erotica
        escort escorts hooker hookers prostitute prostitution stripper strippers camgirl webcam fetish bdsm
        orgasm masturbation masturbate dildo vibrator milf hentai playboy threesome gangbang blowjob handjob
        cumshot creampie anal boobs tits pussy cock dick penis vagina horny slut whore viagra cialis casino
        gambling jackpot poker roulette betting""",
}


def stop_words(lang: str) -> list[str]:
    return STOP_WORDS[lang].split()


def flagged_words(lang: str) -> list[str]:
    return FLAGGED_WORDS[lang].split()
