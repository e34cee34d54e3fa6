"""Write the demo's instruction set and its multiple-choice eval set from templates (seeded, reproducible).

    python scripts/make_demo_data.py            # writes paser_hf/data/demo.jsonl and paser_hf/data/demo_mc.jsonl

Every row is written for this project from the templates below: arithmetic answers are computed, every Python
answer is executed against a check before it is written, rewrites are built from slot values, and facts come from
short tables of well-established facts. The capital cities in the eval set are disjoint from those in the
instruction set. `paser_hf/data/demo_eval_text.txt` (perplexity) is hand-written prose, not generated here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 2502
DATA = Path(__file__).resolve().parents[1] / "paser_hf" / "data"
PER_CAPABILITY = 90

NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kofi", "Lena",
         "Mateo", "Nora", "Omar", "Priya", "Rosa", "Sami", "Tara", "Yusuf"]
PLACES = ["the library", "the town hall", "room 4", "the community centre", "the main office", "the school hall"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
TIMES = ["9 am", "10 am", "11 am", "2 pm", "3 pm", "4 pm"]
EVENTS = ["team meeting", "book club", "chess lesson", "planning session", "choir rehearsal", "budget review"]

TRAIN_CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Canada": "Ottawa", "Australia": "Canberra", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima",
    "Norway": "Oslo", "Sweden": "Stockholm", "Portugal": "Lisbon", "Greece": "Athens", "Ireland": "Dublin",
    "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Argentina": "Buenos Aires", "Chile": "Santiago", "Thailand": "Bangkok", "South Korea": "Seoul",
    "China": "Beijing",
}
EVAL_CAPITALS = {
    "India": "New Delhi", "Mexico": "Mexico City", "Cuba": "Havana", "Belgium": "Brussels", "Russia": "Moscow",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Vietnam": "Hanoi", "Philippines": "Manila",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Nigeria": "Abuja", "Ghana": "Accra", "Morocco": "Rabat",
    "Ethiopia": "Addis Ababa", "Iceland": "Reykjavik", "Czech Republic": "Prague", "New Zealand": "Wellington",
    "Brazil": "Brasilia", "Pakistan": "Islamabad", "Saudi Arabia": "Riyadh", "United Kingdom": "London",
    "Cambodia": "Phnom Penh", "Uganda": "Kampala",
}
ELEMENTS = {
    "oxygen": "O", "hydrogen": "H", "iron": "Fe", "gold": "Au", "silver": "Ag", "sodium": "Na", "potassium": "K",
    "copper": "Cu", "carbon": "C", "nitrogen": "N", "helium": "He", "lead": "Pb", "calcium": "Ca",
}
DEFINITIONS = {
    "a prime number": "a whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5 or 7",
    "a noun": "a word that names a person, place, thing or idea, such as 'teacher', 'city' or 'happiness'",
    "a verb": "a word that describes an action or a state, such as 'run', 'write' or 'be'",
    "an adjective": "a word that describes a noun, such as 'tall', 'blue' or 'quiet'",
    "a triangle": "a flat shape with three straight sides and three angles",
    "a mammal": "a warm-blooded animal with hair or fur that feeds its young with milk",
    "photosynthesis": "the process by which green plants use sunlight, water and carbon dioxide to make sugar and "
                      "release oxygen",
    "evaporation": "the change of a liquid into a gas, as when water dries from a puddle in the sun",
    "a fraction": "a number that describes part of a whole, written as one number over another, such as 3/4",
    "an even number": "a whole number that can be divided by 2 with no remainder, such as 4, 10 or 36",
    "a synonym": "a word with the same or nearly the same meaning as another word, such as 'big' and 'large'",
    "an antonym": "a word with the opposite meaning of another word, such as 'hot' and 'cold'",
    "a circle": "the set of points in a plane that are all the same distance from a centre point",
    "a peninsula": "a piece of land surrounded by water on three sides and joined to the mainland on the fourth",
    "gravity": "the force by which objects with mass attract one another; it makes things fall towards the Earth",
    "a herbivore": "an animal that eats only plants, such as a rabbit or a cow",
    "a carnivore": "an animal that eats mainly other animals, such as a lion or a wolf",
    "an island": "a piece of land completely surrounded by water",
    "a vowel": "in English spelling, one of the letters a, e, i, o and u",
    "a right angle": "an angle of exactly 90 degrees, like the corner of a square",
}
SCIENCE_FACTS = [
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many legs does an insect have?", "An insect has six legs."),
    ("At what temperature does water boil at sea level, in degrees Celsius?",
     "At sea level, water boils at 100 degrees Celsius."),
    ("At what temperature does water freeze at sea level, in degrees Celsius?",
     "At sea level, water freezes at 0 degrees Celsius."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("Which planet is the largest in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Which gas do plants take in from the air to make food?", "Plants take in carbon dioxide from the air."),
    ("How many days are there in a leap year?", "A leap year has 366 days."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
    ("What do bees make from the nectar of flowers?", "Bees make honey from the nectar of flowers."),
    ("What is the chemical formula of water?", "The chemical formula of water is H2O."),
]

PAST_TENSE = [
    ("cleans", "cleaned", "the kitchen"), ("paints", "painted", "the fence"), ("visits", "visited", "the museum"),
    ("waters", "watered", "the plants"), ("cooks", "cooked", "dinner"), ("fixes", "fixed", "the old bicycle"),
    ("plays", "played", "the piano"), ("washes", "washed", "the car"), ("checks", "checked", "the post"),
    ("opens", "opened", "the shop"), ("walks", "walked", "the dog"), ("bakes", "baked", "bread"),
]
PERIODS = ["every Saturday", "every morning", "on Sundays", "after lunch", "in the evening"]
MISSPELLINGS = [
    ("recieve", "receive"), ("definately", "definitely"), ("seperate", "separate"), ("untill", "until"),
    ("tommorow", "tomorrow"), ("beleive", "believe"), ("adress", "address"), ("goverment", "government"),
    ("wierd", "weird"), ("freind", "friend"),
]
SPELLING_SENTENCES = {
    "recieve": "Did you {w} my letter last week?", "definately": "I will {w} be there on time.",
    "seperate": "Please keep the glass and the paper in {w} boxes.", "untill": "The shop is open {w} six.",
    "tommorow": "We are going to the beach {w}.", "beleive": "I {w} the train leaves at noon.",
    "adress": "Write your {w} at the top of the page.", "goverment": "The {w} announced a new park.",
    "wierd": "That was a {w} noise in the attic.", "freind": "My {w} lent me an umbrella.",
}
FORMAL = [
    ("Hey, can you send me the file?", "Could you please send me the file?"),
    ("Thanks a lot for the help!", "Thank you very much for your help."),
    ("I can't make it to the meeting.", "Unfortunately, I am unable to attend the meeting."),
    ("Let me know what you think.", "Please let me know your thoughts."),
    ("Sorry I'm late with this.", "I apologise for the delay."),
    ("We need the report ASAP.", "We need the report as soon as possible."),
    ("Got your message, will call later.", "I have received your message and will call you later."),
    ("Can we move the call to Friday?", "Would it be possible to move the call to Friday?"),
    ("This price is way too high.", "This price is considerably higher than expected."),
    ("Just checking if you got my email.", "I am writing to confirm that you received my email."),
]
WORD_POOL = ["apple", "river", "candle", "garden", "orange", "pencil", "window", "tiger", "mountain", "basket",
             "lemon", "ladder", "violin", "harbour", "meadow", "blanket", "copper", "island", "jacket", "kettle"]
ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("open", "closed"), ("light", "dark"),
    ("early", "late"), ("full", "empty"), ("high", "low"), ("old", "new"), ("strong", "weak"), ("wet", "dry"),
    ("near", "far"), ("up", "down"), ("loud", "quiet"), ("thick", "thin"), ("long", "short"), ("hard", "soft"),
    ("rich", "poor"), ("first", "last"), ("inside", "outside"), ("top", "bottom"), ("day", "night"),
    ("buy", "sell"), ("win", "lose"),
]


def arithmetic(rng: random.Random) -> dict:
    """A word problem whose output shows each computed step and ends with 'The answer is N.'"""
    name = rng.choice(NAMES)
    kind = rng.randrange(10)
    if kind == 0:
        a, b = rng.randint(3, 15), rng.randint(4, 20)
        q = f"A farmer plants {a} rows of apple trees with {b} trees in each row. How many trees does he plant?"
        steps = [f"{a} × {b} = {a * b}"]
    elif kind == 1:
        a, b, c = rng.randint(20, 60), rng.randint(1, 19), rng.randint(2, 30)
        q = f"{name} had {a} marbles, gave {b} to a friend and then bought {c} more. How many marbles are there now?"
        steps = [f"{a} - {b} = {a - b}", f"{a - b} + {c} = {a - b + c}"]
    elif kind == 2:
        a, b, c = rng.randint(20, 50), rng.randint(2, 19), rng.randint(1, 25)
        q = f"A bus carries {a} passengers. At the first stop {b} get off and {c} get on. How many are on the bus now?"
        steps = [f"{a} - {b} = {a - b}", f"{a - b} + {c} = {a - b + c}"]
    elif kind == 3:
        p, n = rng.randint(5, 40), rng.randint(3, 12)
        q = f"A pencil costs {p} cents. How many cents do {n} pencils cost?"
        steps = [f"{p} × {n} = {p * n}"]
    elif kind == 4:
        w, h = rng.randint(2, 30), rng.randint(2, 30)
        if rng.random() < 0.5:
            q = f"A rectangle is {w} cm wide and {h} cm long. What is its area in square centimetres?"
            steps = [f"{w} × {h} = {w * h}"]
        else:
            q = f"A rectangle is {w} cm wide and {h} cm long. What is its perimeter in centimetres?"
            steps = [f"{w} + {h} = {w + h}", f"2 × {w + h} = {2 * (w + h)}"]
    elif kind == 5:
        p, d = rng.randint(5, 40), rng.randint(3, 15)
        q = f"{name} reads {p} pages a day. How many days does it take to read a book of {p * d} pages?"
        steps = [f"{p * d} ÷ {p} = {d}"]
    elif kind == 6:
        n, k, b = rng.randint(3, 12), rng.choice([6, 10, 12]), rng.randint(1, 9)
        q = f"A shop has {n} boxes of eggs with {k} eggs in each box, and {b} eggs are broken. How many eggs are not broken?"
        steps = [f"{n} × {k} = {n * k}", f"{n * k} - {b} = {n * k - b}"]
    elif kind == 7:
        t, r, f = rng.randint(2, 15), rng.randint(3, 12), rng.randint(1, 10)
        q = (f"The temperature was {t} degrees in the morning, rose by {r} degrees by noon and fell by {f} degrees "
             "by evening. What was the temperature in the evening, in degrees?")
        steps = [f"{t} + {r} = {t + r}", f"{t + r} - {f} = {t + r - f}"]
    elif kind == 8:
        v, h = rng.choice([40, 50, 60, 70, 80, 90, 120]), rng.randint(2, 6)
        q = f"A train travels at {v} km per hour for {h} hours. How many kilometres does it travel?"
        steps = [f"{v} × {h} = {v * h}"]
    else:
        n, k = rng.randint(2, 9), rng.randint(3, 12)
        q = f"{n} friends share {n * k} sweets equally. How many sweets does each friend get?"
        steps = [f"{n * k} ÷ {n} = {k}"]
    answer = steps[-1].rsplit("= ", 1)[1]
    work = ". Then ".join(steps)
    return {"instruction": q, "input": "", "output": f"We compute {work}. The answer is {answer}."}


def _code(name: str, body: str) -> str:
    return f"def {name}" + body


def python_task(rng: random.Random) -> dict:
    """A short Python task; the code is executed against a check before it is returned."""
    kind = rng.randrange(15)
    if kind == 0:
        which, cond = rng.choice([("even", "x % 2 == 0"), ("odd", "x % 2 == 1"), ("positive", "x > 0"),
                                  ("negative", "x < 0")])
        name = f"sum_of_{which}"
        task = f"Write a Python function `{name}` that returns the sum of the {which} numbers in a list."
        code = _code(name, f"(numbers):\n    return sum(x for x in numbers if {cond})\n")
        check = f"assert {name}([1, 2, 3, -4, 5, -6]) == sum(x for x in [1, 2, 3, -4, 5, -6] if {cond})"
    elif kind == 1:
        ch = rng.choice("aeiosxz")
        name = f"count_{ch}"
        task = f"Write a Python function `{name}` that counts how many times the letter '{ch}' appears in a string."
        code = _code(name, f"(text):\n    return text.count({ch!r})\n")
        check = f"assert {name}('{ch}b{ch}{ch}') == 3"
    elif kind == 2:
        k = rng.randint(3, 13)
        name = f"divisible_by_{k}"
        task = f"Write a Python function `{name}` that returns True when an integer is divisible by {k}."
        code = _code(name, f"(n):\n    return n % {k} == 0\n")
        check = f"assert {name}({k * 7}) and not {name}({k * 7 + 1})"
    elif kind == 3:
        src, dst, factor = rng.choice([("kilometres", "metres", 1000), ("hours", "minutes", 60),
                                       ("kilograms", "grams", 1000), ("minutes", "seconds", 60),
                                       ("metres", "centimetres", 100), ("days", "hours", 24), ("weeks", "days", 7)])
        name = f"{src}_to_{dst}"
        task = f"Write a Python function `{name}` that converts a number of {src} to {dst}."
        code = _code(name, f"({src}):\n    return {src} * {factor}\n")
        check = f"assert {name}(3) == {3 * factor}"
    elif kind == 4:
        which, op = rng.choice([("largest", ">"), ("smallest", "<")])
        name = f"{which}_item"
        task = f"Write a Python function `{name}` that returns the {which} number in a non-empty list without using max or min."
        code = _code(name, f"(numbers):\n    best = numbers[0]\n    for x in numbers[1:]:\n        if x {op} best:\n"
                           "            best = x\n    return best\n")
        expected = 9 if which == "largest" else -2
        check = f"assert {name}([4, 9, -2, 7]) == {expected}"
    elif kind == 5:
        power, word = rng.choice([(2, "squares"), (3, "cubes")])
        name = f"{word}_up_to"
        task = f"Write a Python function `{name}` that returns a list of the {word} of the numbers from 1 to n."
        code = _code(name, f"(n):\n    return [i ** {power} for i in range(1, n + 1)]\n")
        check = f"assert {name}(4) == {[i ** power for i in range(1, 5)]}"
    elif kind == 6:
        name, task, body, check = rng.choice([
            ("reverse_text", "returns a string reversed", "(text):\n    return text[::-1]\n",
             "assert reverse_text('abc') == 'cba'"),
            ("is_palindrome", "checks whether a word reads the same backwards, ignoring case",
             "(word):\n    word = word.lower()\n    return word == word[::-1]\n",
             "assert is_palindrome('Level') and not is_palindrome('house')"),
            ("remove_vowels", "removes the vowels a, e, i, o and u from a string",
             "(text):\n    return ''.join(c for c in text if c.lower() not in 'aeiou')\n",
             "assert remove_vowels('Banana') == 'Bnn'"),
            ("count_words", "counts the words in a sentence separated by spaces",
             "(sentence):\n    return len(sentence.split())\n", "assert count_words('one two  three') == 3"),
        ])
        task = f"Write a Python function `{name}` that {task}."
        code = _code(name, body)
    elif kind == 7:
        k = rng.randint(2, 9)
        name = f"multiples_of_{k}"
        task = f"Write a Python function `{name}` that returns the first n multiples of {k} as a list."
        code = _code(name, f"(n):\n    return [{k} * i for i in range(1, n + 1)]\n")
        check = f"assert {name}(3) == {[k, 2 * k, 3 * k]}"
    elif kind == 8:
        d = rng.randint(0, 3)
        name = "average"
        task = f"Write a Python function `{name}` that returns the average of a non-empty list of numbers, rounded to {d} decimal places."
        code = _code(name, f"(numbers):\n    return round(sum(numbers) / len(numbers), {d})\n")
        check = f"assert {name}([1, 2, 4]) == round(7 / 3, {d})"
    elif kind == 9:
        k = rng.randint(3, 8)
        name = "long_words"
        task = f"Write a Python function `{name}` that returns the words of a sentence that have more than {k} letters."
        code = _code(name, f"(sentence):\n    return [w for w in sentence.split() if len(w) > {k}]\n")
        check = f"assert {name}('a ' + 'b' * {k + 1}) == ['{'b' * (k + 1)}']"
    elif kind == 10:
        k = rng.randint(2, 9)
        name = f"sum_multiples_of_{k}"
        task = f"Write a Python function `{name}` that returns the sum of the numbers from 1 to n that are multiples of {k}."
        code = _code(name, f"(n):\n    return sum(i for i in range(1, n + 1) if i % {k} == 0)\n")
        check = f"assert {name}({3 * k}) == {6 * k}"
    elif kind == 11:
        k, sep = rng.randint(2, 5), rng.choice(["-", ", ", " "])
        name = "repeat_text"
        task = f"Write a Python function `{name}` that repeats a string {k} times, separated by {sep!r}."
        code = _code(name, f"(text):\n    return {sep!r}.join([text] * {k})\n")
        check = f"assert {name}('ab') == {sep.join(['ab'] * k)!r}"
    elif kind == 12:
        k, end = rng.randint(2, 6), rng.choice(["first", "last"])
        name = f"{end}_characters"
        task = f"Write a Python function `{name}` that returns the {end} {k} characters of a string."
        piece = f"text[:{k}]" if end == "first" else f"text[-{k}:]"
        code = _code(name, f"(text):\n    return {piece}\n")
        check = f"assert {name}('abcdefgh') == {('abcdefgh'[:k] if end == 'first' else 'abcdefgh'[-k:])!r}"
    elif kind == 13:
        name, task, body, check = rng.choice([
            ("celsius_to_fahrenheit", "converts degrees Celsius to degrees Fahrenheit",
             "(celsius):\n    return celsius * 9 / 5 + 32\n", "assert celsius_to_fahrenheit(100) == 212"),
            ("fahrenheit_to_celsius", "converts degrees Fahrenheit to degrees Celsius",
             "(fahrenheit):\n    return (fahrenheit - 32) * 5 / 9\n", "assert fahrenheit_to_celsius(212) == 100"),
        ])
        task = f"Write a Python function `{name}` that {task}."
        code = _code(name, body)
    else:
        k = rng.randint(0, 10)
        name = "count_greater"
        task = f"Write a Python function `{name}` that counts the numbers in a list that are greater than {k}."
        code = _code(name, f"(numbers):\n    return sum(1 for x in numbers if x > {k})\n")
        check = f"assert {name}([{k - 1}, {k}, {k + 1}, {k + 5}]) == 2"
    namespace: dict = {}
    exec(code + check, namespace)
    return {"instruction": task, "input": "", "output": f"```python\n{code}```"}


def rewriting(rng: random.Random) -> dict:
    """Rewrites and summaries built from slot values, so the answer follows from the input."""
    kind = rng.randrange(6)
    name = rng.choice(NAMES)
    if kind == 0:
        present, past, obj = rng.choice(PAST_TENSE)
        period = rng.choice(PERIODS)
        return {"instruction": "Rewrite the sentence in the past tense.", "input": f"{name} {present} {obj} {period}.",
                "output": f"{name} {past} {obj} {period}."}
    if kind == 1:
        event, old, new = rng.choice(EVENTS), *rng.sample(DAYS, 2)
        place, time, contact = rng.choice(PLACES), rng.choice(TIMES), rng.choice(NAMES)
        note = (f"Hello everyone, a quick reminder that the {event} has moved from {old} to {new}. It will still take "
                f"place in {place} at {time}. If you cannot come, please tell {contact} before the day.")
        return {"instruction": "Summarise the note in one sentence.", "input": note,
                "output": f"The {event} is now on {new} at {time} in {place}; tell {contact} if you cannot come."}
    if kind == 2:
        words = rng.sample(WORD_POOL, rng.randint(4, 6))
        return {"instruction": "Sort these words in alphabetical order.", "input": ", ".join(words),
                "output": ", ".join(sorted(words))}
    if kind == 3:
        wrong, right = rng.choice(MISSPELLINGS)
        sentence = SPELLING_SENTENCES[wrong]
        return {"instruction": "Correct the spelling mistake in the sentence.", "input": sentence.format(w=wrong),
                "output": sentence.format(w=right)}
    if kind == 4:
        informal, formal = rng.choice(FORMAL)
        return {"instruction": "Rewrite the message in a more formal tone.", "input": informal, "output": formal}
    items = rng.sample(["eggs", "flour", "milk", "butter", "apples", "rice", "tea", "cheese", "bread", "onions"], 3)
    return {"instruction": "Turn the shopping list into one sentence.", "input": "\n".join(f"- {i}" for i in items),
            "output": f"We need to buy {items[0]}, {items[1]} and {items[2]}."}


def facts() -> list[dict]:
    """Every fact row (capitals, element symbols, definitions, science facts), each phrasing once."""
    rows = []
    for country, city in TRAIN_CAPITALS.items():
        for question in (f"What is the capital of {country}?", f"Which city is the capital of {country}?"):
            rows.append({"instruction": question, "input": "", "output": f"The capital of {country} is {city}."})
    for element, symbol in ELEMENTS.items():
        rows.append({"instruction": f"What is the chemical symbol of {element}?", "input": "",
                     "output": f"The chemical symbol of {element} is {symbol}."})
    for term, meaning in DEFINITIONS.items():
        rows.append({"instruction": f"Define {term} in one sentence.", "input": "",
                     "output": f"{term[0].upper() + term[1:]} is {meaning}."})
    rows += [{"instruction": q, "input": "", "output": a} for q, a in SCIENCE_FACTS]
    return rows


def unique(make, rng: random.Random, count: int) -> list[dict]:
    rows, seen = [], set()
    for _ in range(100 * count):
        if len(rows) == count:
            return rows
        row = make(rng)
        key = (row["instruction"], row["input"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    raise RuntimeError(f"{make.__name__} gives fewer than {count} distinct rows; add templates.")


def instruction_set(rng: random.Random) -> list[dict]:
    groups = {
        "arithmetic": unique(arithmetic, rng, PER_CAPABILITY),
        "python": unique(python_task, rng, PER_CAPABILITY),
        "rewriting": unique(rewriting, rng, PER_CAPABILITY),
        "facts": facts(),
    }
    rows = [{**row, "capability": cap} for cap, group in groups.items() for row in group]
    rng.shuffle(rows)
    return rows


def _choices(rng: random.Random, right: str, wrong: list[str]) -> tuple[list[str], int]:
    options = [right, *wrong]
    rng.shuffle(options)
    return options, options.index(right)


def mc_set(rng: random.Random) -> list[dict]:
    """~100 questions: capitals (held out from the instruction set), sums and products, antonyms, first letters."""
    rows = []
    cities = list(EVAL_CAPITALS.values())
    for country, city in EVAL_CAPITALS.items():
        wrong = rng.sample([c for c in cities if c != city], 3)
        choices, gold = _choices(rng, city, wrong)
        rows.append({"query": f"Question: What is the capital of {country}?\nAnswer:", "choices": choices,
                     "gold": gold, "kind": "capital"})
    for _ in range(25):
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        op, value = (("+", a + b) if rng.random() < 0.5 else ("×", a * b)) if a < 13 or b < 13 else ("+", a + b)
        wrong = rng.sample([v for v in {value + 1, value - 1, value + 10, value - 10, value + 2} if v > 0], 3)
        choices, gold = _choices(rng, str(value), [str(v) for v in wrong])
        rows.append({"query": f"Question: What is {a} {op} {b}?\nAnswer:", "choices": choices, "gold": gold,
                     "kind": "arithmetic"})
    words = [w for pair in ANTONYMS for w in pair]
    for word, opposite in ANTONYMS:
        wrong = rng.sample([w for w in words if w not in (word, opposite)], 3)
        choices, gold = _choices(rng, opposite, wrong)
        rows.append({"query": f"Question: What is the opposite of the word '{word}'?\nAnswer:", "choices": choices,
                     "gold": gold, "kind": "antonym"})
    for word in rng.sample(WORD_POOL, 20) + ["zebra", "queen", "yellow", "nest", "uncle"]:
        first = word[0].upper()
        wrong = rng.sample([c for c in "ABCDEFGHIJKLMNOPRSTUVWYZ" if c != first], 3)
        choices, gold = _choices(rng, first, wrong)
        rows.append({"query": f"Question: Which letter does the word '{word}' start with?\nAnswer:",
                     "choices": choices, "gold": gold, "kind": "first_letter"})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(SEED)
    DATA.mkdir(parents=True, exist_ok=True)
    train, mc = instruction_set(rng), mc_set(rng)
    write_jsonl(DATA / "demo.jsonl", train)
    write_jsonl(DATA / "demo_mc.jsonl", mc)
    print(f"wrote {len(train)} instruction rows and {len(mc)} multiple-choice rows to {DATA}")


if __name__ == "__main__":
    main()
