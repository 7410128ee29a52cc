"""The fixed English corpus the offline tiny model's tokenizer is trained on.

It lives in code, not in a data file, so it ships with the package and needs no network. `corpus_lines()`
returns the same lines every time (a seeded `random.Random`, never the global RNG), which keeps the BPE
merges, and therefore the whole tiny model, reproducible. It mixes plain prose (common words and
punctuation) with the kinds of questions the sample dataset asks: arithmetic, word reversal, capitals of
countries and unit conversion. The tokenizer is byte-level, so text outside this corpus still encodes.
"""

from __future__ import annotations

import random

PROSE = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Hello! How can I help you today? I am a small language model, and I will try to answer your question.
Please tell me what you need, and I will do my best. Thank you for asking; that is a good question.
Yes, that is right. No, that is not correct. Maybe you could try again? Let's think step by step.
The answer is short and exact. Here is the result: it is the number you asked for.
Every morning, the sun rises in the east and sets in the west. Water boils at 100 degrees Celsius
and freezes at 0 degrees. There are 7 days in a week, 24 hours in a day, 60 minutes in an hour and
60 seconds in a minute. A year has 12 months and usually 365 days; a leap year has 366 days.
People live in cities, towns and villages. They work, study, cook, read books, write letters, play
music, watch films and travel by car, bus, train, boat or plane. Children go to school to learn
reading, writing, mathematics, history, geography, science, art and languages.
Mathematics is the study of numbers, shapes and patterns. We add, subtract, multiply and divide.
The sum of two and three is five. The difference between ten and four is six. The product of six and
seven is forty-two. Half of eight is four. Twice nine is eighteen. Zero is neither positive nor negative.
Science explains the world: physics studies energy and motion, chemistry studies matter, biology
studies living things, and astronomy studies the stars, the planets and the Moon.
A computer runs programs. A program is a list of instructions written in a language such as Python,
C, Java or JavaScript. Data is stored in files, tables and databases; a model learns from data.
Machine learning models are trained on examples. During training, the loss should go down, and the
accuracy on the validation set should go up. If it does not, check the learning rate, the data and the
labels. Fine-tuning adapts a pretrained model to a new task with a small dataset.
In the kitchen, we need flour, sugar, eggs, milk, butter, salt, oil, rice, bread, cheese, apples,
oranges, bananas, lemons, tomatoes, potatoes, onions, carrots, beans, chicken, fish and coffee or tea.
Colors: red, orange, yellow, green, blue, purple, pink, brown, black, white and gray.
Animals: cat, dog, horse, cow, sheep, goat, pig, bird, duck, mouse, rabbit, lion, tiger, bear, wolf,
fox, monkey, elephant, snake, frog, whale, shark and dolphin.
The weather today is sunny and warm, but tomorrow it may be cloudy, windy, rainy or even snowy.
Spring, summer, autumn and winter are the four seasons. January, February, March, April, May, June,
July, August, September, October, November and December are the months of the year. Monday, Tuesday,
Wednesday, Thursday, Friday, Saturday and Sunday are the days of the week.
"Where are you going?" she asked. "To the library," he said, "and then home." (It was late.)
Note: prices are in dollars ($), euros and pounds; 50% off means half price. Email: user@example.com.
Use brackets [like this], braces {like this}, and symbols such as #, &, *, /, \\, |, ~, ^, < and >.
"""

COMMON_WORDS = """\
the be to of and a in that have I it for not on with he as you do at this but his by from they we say
her she or an will my one all would there their what so up out if about who get which go me when make
can like time no just him know take people into year your good some could them see other than then now
look only come its over think also back after use two how our work first well way even new want because
any these give day most us is are was were been has had did does said made went got saw came took knew
thought told asked used found gave answer question word number letter name country city capital unit
meter meters centimeter centimeters kilometer kilometers millimeter millimeters gram grams kilogram
kilograms liter liters milliliter milliliters inch inches foot feet mile miles pound pounds ounce ounces
hour hours minute minutes second seconds day days week weeks year years degree degrees percent
plus minus times divided equals sum difference product quotient remainder add subtract multiply divide
reverse reversed backwards spell spelled letters characters convert conversion how many much is are in
what which where when why who whose whom small large big little long short high low old young early late
right left true false correct wrong yes no please thanks sorry hello hi goodbye system user assistant
helpful honest harmless concise exact short answer only respond reply output input example examples
""".split()

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million billion first second third fourth fifth half quarter double triple"
).split()

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "United Kingdom": "London", "Ireland": "Dublin", "Netherlands": "Amsterdam", "Belgium": "Brussels",
    "Switzerland": "Bern", "Austria": "Vienna", "Poland": "Warsaw", "Czechia": "Prague",
    "Hungary": "Budapest", "Greece": "Athens", "Sweden": "Stockholm", "Norway": "Oslo",
    "Denmark": "Copenhagen", "Finland": "Helsinki", "Iceland": "Reykjavik", "Russia": "Moscow",
    "Ukraine": "Kyiv", "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade",
    "Croatia": "Zagreb", "Turkey": "Ankara", "Egypt": "Cairo", "Morocco": "Rabat", "Algeria": "Algiers",
    "Tunisia": "Tunis", "Nigeria": "Abuja", "Ghana": "Accra", "Kenya": "Nairobi", "Ethiopia": "Addis Ababa",
    "South Africa": "Pretoria", "Senegal": "Dakar", "Tanzania": "Dodoma", "Uganda": "Kampala",
    "Canada": "Ottawa", "United States": "Washington", "Mexico": "Mexico City", "Cuba": "Havana",
    "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Chile": "Santiago", "Peru": "Lima",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Ecuador": "Quito", "Uruguay": "Montevideo",
    "Bolivia": "Sucre", "Paraguay": "Asuncion", "China": "Beijing", "Japan": "Tokyo",
    "South Korea": "Seoul", "India": "New Delhi", "Pakistan": "Islamabad", "Bangladesh": "Dhaka",
    "Nepal": "Kathmandu", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "Philippines": "Manila", "Malaysia": "Kuala Lumpur", "Singapore": "Singapore", "Iran": "Tehran",
    "Iraq": "Baghdad", "Israel": "Jerusalem", "Saudi Arabia": "Riyadh", "Qatar": "Doha", "Oman": "Muscat",
    "Afghanistan": "Kabul", "Kazakhstan": "Astana", "Mongolia": "Ulaanbaatar", "Australia": "Canberra",
    "New Zealand": "Wellington", "Fiji": "Suva", "Jamaica": "Kingston", "Panama": "Panama City",
}

# (from unit, to unit, factor): "How many centimeters are in 3 meters?" -> 300
CONVERSIONS = [
    ("meters", "centimeters", 100), ("meters", "millimeters", 1000), ("kilometers", "meters", 1000),
    ("centimeters", "millimeters", 10), ("kilograms", "grams", 1000), ("liters", "milliliters", 1000),
    ("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
    ("years", "months", 12), ("feet", "inches", 12), ("yards", "feet", 3), ("pounds", "ounces", 16),
    ("dollars", "cents", 100), ("kilobytes", "bytes", 1000),
]

WORDS_TO_REVERSE = """\
apple banana cherry orange lemon grape mango melon peach pear plum house garden window door table chair
water river ocean mountain forest desert island planet star moon sun cloud rain snow storm wind light
music piano guitar violin drum song dance paper pencil book story poem letter word world house mouse
horse tiger lion zebra camel eagle robin shark whale dolphin turtle rabbit kitten puppy dragon castle
bridge street market school teacher student doctor farmer baker pilot sailor king queen prince castle
""".split()

OPS = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]


def _qa_lines(rng: random.Random) -> list[str]:
    """Question/answer sentences in the sample dataset's domains, phrased a few different ways."""
    lines: list[str] = []
    for _ in range(300):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        sym, fn = rng.choice(OPS)
        form = rng.choice(["What is {a} {s} {b}? {r}", "Compute {a} {s} {b}. The answer is {r}.",
                           "{a} {s} {b} = {r}", "Q: What is {a} {s} {b}? A: {r}"])
        lines.append(form.format(a=a, s=sym, b=b, r=fn(a, b)))
    for country, city in CAPITALS.items():
        lines.append(f"What is the capital of {country}? {city}")
        lines.append(f"The capital of {country} is {city}.")
        lines.append(f"{city} is the capital city of {country}.")
    for word in WORDS_TO_REVERSE:
        rev = word[::-1]
        lines.append(rng.choice([f"Reverse the word '{word}'. {rev}", f'Spell "{word}" backwards: {rev}',
                                 f"The word {word} reversed is {rev}."]))
    for src, dst, factor in CONVERSIONS:
        for _ in range(4):
            n = rng.randint(1, 20)
            lines.append(rng.choice([f"How many {dst} are in {n} {src}? {n * factor}",
                                     f"Convert {n} {src} to {dst}. {n * factor} {dst}",
                                     f"{n} {src} is {n * factor} {dst}."]))
    return lines


def _word_lines(rng: random.Random) -> list[str]:
    """Common words in shuffled short sentences, so each becomes a merge even when prose lacks it."""
    vocab = COMMON_WORDS + NUMBER_WORDS + list(CAPITALS) + list(CAPITALS.values())
    lines = []
    for _ in range(6):
        words = vocab[:]
        rng.shuffle(words)
        for i in range(0, len(words), 12):
            chunk = words[i:i + 12]
            lines.append(" ".join(chunk).capitalize() + rng.choice([".", "?", "!", ",", ";", ":"]))
    return lines


def corpus_lines(seed: int = 0) -> list[str]:
    """All corpus lines in a fixed order: prose, chat phrases, word lists, then the question styles."""
    rng = random.Random(seed)
    chat = ["You are a helpful assistant.", "You are a concise assistant. Answer with the result only.",
            "Answer the question with a short, exact answer.", "Sure! Here you go.", "I don't know."]
    return PROSE.splitlines() * 3 + chat * 5 + _word_lines(rng) + _qa_lines(rng)


def corpus_text(seed: int = 0) -> str:
    return "\n".join(corpus_lines(seed)) + "\n"
