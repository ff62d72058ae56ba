"""General-knowledge prose: the offline FineWeb-Edu stand-in.

Small non-medical tables (countries, planets, elements, physics concepts,
cooking techniques, animals and history) and the sentence templates that turn
each row into short educational passages. :func:`general_passages` is
re-exported by :mod:`pure_transformer.bundled.synthetic`, which bundles this text
with the medical passages and questions.

Passages draw from a ``random.Random`` seeded with a string built from
``seed``, and set-built variants are sorted before use, so the same seed
always gives byte-identical output.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .templates import cap

# --------------------------------------------------------------------------
# General-knowledge tables for the FineWeb-Edu stand-in (non-medical prose)
# --------------------------------------------------------------------------

# country, capital, continent, main language(s), a well-known sight
COUNTRIES: tuple[tuple[str, str, str, str, str], ...] = (
    ("France", "Paris", "Europe", "French", "the castles of the Loire valley"),
    ("Japan", "Tokyo", "Asia", "Japanese", "Mount Fuji"),
    ("Kenya", "Nairobi", "Africa", "Swahili and English", "the Great Rift Valley"),
    ("Brazil", "Brasilia", "South America", "Portuguese", "the Amazon rainforest"),
    ("Canada", "Ottawa", "North America", "English and French", "the Rocky Mountains"),
    ("Australia", "Canberra", "Oceania", "English", "the Great Barrier Reef"),
    ("Egypt", "Cairo", "Africa", "Arabic", "the pyramids of Giza"),
    ("India", "New Delhi", "Asia", "Hindi and English", "the Taj Mahal"),
    ("Peru", "Lima", "South America", "Spanish and Quechua", "the mountain citadel of Machu Picchu"),
    ("Norway", "Oslo", "Europe", "Norwegian", "its deep coastal fjords"),
    ("Mexico", "Mexico City", "North America", "Spanish", "the ancient city of Teotihuacan"),
    ("Italy", "Rome", "Europe", "Italian", "the Colosseum"),
    ("Morocco", "Rabat", "Africa", "Arabic and Berber", "the Atlas Mountains"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese", "the limestone islands of Ha Long Bay"),
    ("Argentina", "Buenos Aires", "South America", "Spanish", "the glaciers of Patagonia"),
    ("Iceland", "Reykjavik", "Europe", "Icelandic", "its geysers and glaciers"),
    ("New Zealand", "Wellington", "Oceania", "English and Maori", "the Southern Alps"),
    ("Turkey", "Ankara", "Europe and Asia", "Turkish", "the rock chimneys of Cappadocia"),
    ("South Korea", "Seoul", "Asia", "Korean", "the royal palaces of its capital"),
    ("Chile", "Santiago", "South America", "Spanish", "the Atacama Desert"),
    ("Ghana", "Accra", "Africa", "English", "Lake Volta"),
    ("Greece", "Athens", "Europe", "Greek", "the Acropolis"),
    ("Thailand", "Bangkok", "Asia", "Thai", "its floating markets"),
    ("Spain", "Madrid", "Europe", "Spanish", "the Alhambra palace"),
    ("Nepal", "Kathmandu", "Asia", "Nepali", "Mount Everest"),
    ("Ethiopia", "Addis Ababa", "Africa", "Amharic", "the rock-hewn churches of Lalibela"),
    ("Germany", "Berlin", "Europe", "German", "the Black Forest"),
    ("Indonesia", "Jakarta", "Asia", "Indonesian", "the temple of Borobudur"),
    ("Ireland", "Dublin", "Europe", "English and Irish", "the Cliffs of Moher"),
    ("Tanzania", "Dodoma", "Africa", "Swahili and English", "Mount Kilimanjaro"),
)

# planet, position from the Sun, a notable feature (a clause), its moons
PLANETS: tuple[tuple[str, str, str, str], ...] = (
    ("Mercury", "first", "there is almost no atmosphere and temperatures swing wildly", "no moons"),
    ("Venus", "second", "a thick carbon dioxide atmosphere traps enormous heat", "no moons"),
    ("Earth", "third", "liquid water covers most of the surface", "one large moon"),
    ("Mars", "fourth", "iron oxide dust gives the surface its red color", "two small moons"),
    ("Jupiter", "fifth", "a giant storm called the Great Red Spot has raged for centuries", "dozens of moons"),
    ("Saturn", "sixth", "bright rings of ice and rock circle the planet", "dozens of moons"),
    ("Uranus", "seventh", "the planet spins almost on its side", "more than two dozen moons"),
    ("Neptune", "eighth", "the fastest winds in the solar system blow", "more than a dozen moons"),
)

# element, symbol, atomic number, a description (noun phrase)
ELEMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("hydrogen", "H", "1", "the lightest element and the main fuel of stars"),
    ("helium", "He", "2", "a noble gas used to fill balloons and cool magnets"),
    ("carbon", "C", "6", "the backbone of every organic molecule"),
    ("nitrogen", "N", "7", "the main component of the air we breathe"),
    ("oxygen", "O", "8", "a reactive gas needed for respiration and burning"),
    ("sodium", "Na", "11", "a soft metal that reacts vigorously with water"),
    ("magnesium", "Mg", "12", "a light metal that burns with a brilliant white flame"),
    ("aluminum", "Al", "13", "a light metal used in cans and aircraft"),
    ("silicon", "Si", "14", "the basis of most computer chips"),
    ("chlorine", "Cl", "17", "a reactive gas used to disinfect drinking water"),
    ("calcium", "Ca", "20", "a key mineral in bones, teeth and shells"),
    ("iron", "Fe", "26", "the main ingredient of steel"),
    ("copper", "Cu", "29", "a reddish metal used in electrical wiring"),
    ("silver", "Ag", "47", "the metal that conducts electricity best"),
    ("gold", "Au", "79", "a soft yellow metal that does not tarnish"),
    ("mercury", "Hg", "80", "the only metal that is liquid at room temperature"),
    ("uranium", "U", "92", "a heavy radioactive metal used as nuclear fuel"),
)

# physics concept, definition, SI unit, an everyday example
PHYSICS: tuple[tuple[str, str, str, str], ...] = (
    ("force", "a push or pull that changes how an object moves", "newton", "a foot kicking a ball"),
    ("energy", "the capacity to do work", "joule", "a stretched spring waiting to snap back"),
    ("power", "the rate at which work is done", "watt", "a lamp turning electricity into light"),
    ("pressure", "force spread over an area", "pascal", "air pushing outward on the walls of a tire"),
    ("electric current", "the flow of electric charge", "ampere", "charge moving along a copper wire"),
    ("voltage", "the electrical push that drives current around a circuit", "volt", "a battery lighting a torch"),
    ("resistance", "the opposition a material offers to current", "ohm", "the thin glowing wire in a toaster"),
    ("frequency", "the number of wave cycles each second", "hertz", "a plucked guitar string humming"),
    ("temperature", "a measure of the average motion of particles", "kelvin", "a thermometer dipped in warm water"),
    ("momentum", "the product of mass and velocity", "kilogram meter per second", "a loaded train that is hard to stop"),
    ("acceleration", "the rate at which velocity changes", "meter per second squared", "a bicycle speeding up downhill"),
    ("density", "mass per unit volume", "kilogram per cubic meter", "a pebble sinking while a cork floats"),
)

# cooking technique, what it means, a dish that uses it
COOKING: tuple[tuple[str, str, str], ...] = (
    ("braising", "browning food and then cooking it slowly in a little liquid in a covered pot", "beef short ribs"),
    ("poaching", "cooking food gently in liquid kept just below a simmer", "eggs and pears"),
    ("roasting", "cooking food with dry heat in an oven", "root vegetables"),
    ("steaming", "cooking food in the vapor rising from boiling water", "dumplings"),
    ("sauteing", "cooking small pieces quickly in a little fat over high heat", "sliced mushrooms"),
    ("blanching", "boiling food briefly and then plunging it into ice water", "green beans"),
    ("caramelizing", "heating sugars slowly until they turn brown and nutty", "onions"),
    ("kneading", "pressing and folding dough to develop its gluten", "bread"),
    ("fermenting", "letting microbes transform food over days or weeks", "sauerkraut"),
    ("grilling", "cooking food over strong direct heat", "corn on the cob"),
    ("emulsifying", "blending two liquids that would normally separate", "mayonnaise"),
    ("pickling", "preserving food in brine or vinegar", "cucumbers"),
)

# animal, habitat, diet, a remarkable trait (a clause)
ANIMALS: tuple[tuple[str, str, str, str], ...] = (
    ("the African elephant", "the savannas and forests of Africa", "grasses, leaves and bark",
     "it uses its trunk to drink, smell and grasp"),
    ("the emperor penguin", "the sea ice of Antarctica", "fish and krill",
     "males keep the eggs warm on their feet through the winter"),
    ("the red fox", "forests, farmland and cities across the north", "rodents, birds, fruit and scraps",
     "it can hear small animals moving beneath the snow"),
    ("the honeybee", "hives near meadows and orchards", "nectar and pollen",
     "it shares the location of flowers through a waggle dance"),
    ("the blue whale", "the open oceans", "tiny krill", "it is the largest animal known to have lived"),
    ("the octopus", "rocky reefs and the sea floor", "crabs and shellfish",
     "it can change the color and texture of its skin"),
    ("the koala", "the eucalyptus forests of eastern Australia", "eucalyptus leaves",
     "it sleeps for most of the day"),
    ("the snowy owl", "the Arctic tundra", "lemmings and other small mammals",
     "its white feathers hide it against the snow"),
    ("the camel", "the deserts of Africa and Asia", "dry grasses and thorny plants",
     "it can go many days without drinking"),
    ("the monarch butterfly", "the meadows of North America", "milkweed as a caterpillar and nectar as an adult",
     "it migrates thousands of kilometers each year"),
    ("the beaver", "rivers and streams", "bark and water plants", "it builds dams that turn streams into ponds"),
    ("the sea otter", "the kelp forests of the North Pacific", "sea urchins and clams",
     "it uses stones as tools to crack shells"),
    ("the giant panda", "the mountain bamboo forests of China", "bamboo",
     "a thumb-like wrist bone helps it grip the stalks"),
    ("the hummingbird", "the gardens and forests of the Americas", "flower nectar and small insects",
     "it can hover in place and even fly backward"),
    ("the chameleon", "the forests of Madagascar and Africa", "insects",
     "its eyes can move independently of each other"),
    ("the salmon", "rivers and the open sea", "insects, shrimp and small fish",
     "it returns to the stream where it hatched in order to spawn"),
)

# historical topic, when (a phrase that follows the topic), what happened (a clause)
HISTORY: tuple[tuple[str, str, str], ...] = (
    ("the printing press", "in the fifteenth century", "movable metal type made books far cheaper to produce"),
    ("the Industrial Revolution", "in the late eighteenth and nineteenth centuries",
     "steam power and factories transformed how goods were made"),
    ("the Silk Road", "in ancient and medieval times",
     "caravan routes carried silk, spices and ideas between China and the Mediterranean"),
    ("the Roman aqueducts", "in antiquity", "engineers moved water over long distances using gentle slopes"),
    ("the Renaissance", "between the fourteenth and sixteenth centuries",
     "artists and scholars revived interest in classical learning"),
    ("the first powered flight", "in 1903", "the Wright brothers flew a heavier-than-air machine at Kitty Hawk"),
    ("the Moon landing", "in 1969", "the crew of Apollo 11 walked on the lunar surface"),
    ("the invention of the telephone", "in the 1870s", "spoken words were first carried along electrical wires"),
    ("the Great Wall of China", "over many dynasties", "successive states built walls to guard their northern frontier"),
    ("the age of ocean exploration", "in the fifteenth and sixteenth centuries",
     "long voyages under sail connected distant continents"),
    ("the discovery of penicillin", "in 1928", "a mold was seen killing bacteria in a forgotten culture dish"),
)


# --------------------------------------------------------------------------
# Sentence templates and passages
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topic:
    """A table of facts plus sentence templates that name its columns."""

    rows: tuple[tuple[str, ...], ...]
    fields: tuple[str, ...]
    sentences: tuple[str, ...]  # used in training text
    heldout: tuple[str, ...]  # used only in validation text


_TOPICS = (
    _Topic(COUNTRIES, ("country", "capital", "continent", "language", "sight"), (
        "{country} is a country in {continent}.",
        "The capital of {country} is {capital}.",
        "Most people in {country} speak {language}.",
        "Visitors to {country} often travel to see {sight}.",
        "{capital} is the seat of government of {country}.",
        "Geography lessons about {continent} often mention {country} and {sight}.",
    ), (
        "Among the nations of {continent}, {country} is known for {sight}.",
        "Government offices in {country} are concentrated in {capital}, and {language} is widely spoken.",
    )),
    _Topic(PLANETS, ("planet", "position", "feature", "moons"), (
        "{planet} is the {position} planet from the Sun.",
        "On {planet}, {feature}.",
        "{planet} has {moons}.",
        "Astronomers studying {planet} point out that {feature}.",
        "Counting outward from the Sun, {planet} comes {position}.",
    ), (
        "Space probes sent to {planet}, the {position} planet, confirmed that {feature}.",
        "Observers have counted {moons} around {planet}.",
    )),
    _Topic(ELEMENTS, ("element", "symbol", "number", "description"), (
        "{element} has the chemical symbol {symbol}.",
        "The atomic number of {element} is {number}, so each atom holds {number} protons.",
        "{element} is {description}.",
        "Chemists write {element} as {symbol} in formulas.",
        "In the periodic table, element number {number} is {element}.",
    ), (
        "On a periodic table, look for {symbol}: that is {element}, {description}.",
        "Every atom of {element} carries {number} protons in its nucleus.",
    )),
    _Topic(PHYSICS, ("concept", "definition", "unit", "example"), (
        "In physics, {concept} is {definition}.",
        "The SI unit of {concept} is the {unit}.",
        "A simple example of {concept} is {example}.",
        "When teachers explain {concept}, they often point to {example}.",
        "Scientists express {concept} in units called the {unit}.",
    ), (
        "Think of {example}: it illustrates {concept}, which physicists define as {definition}.",
        "Measurements of {concept} are reported using the {unit}.",
    )),
    _Topic(COOKING, ("technique", "meaning", "dish"), (
        "In the kitchen, {technique} means {meaning}.",
        "A classic use of {technique} is for {dish}.",
        "Cooks often choose {technique} when preparing {dish}.",
        "Home cooks learning {technique} usually start with {dish}.",
        "The technique called {technique} involves {meaning}.",
    ), (
        "Recipes for {dish} frequently rely on {technique}, that is, {meaning}.",
        "Culinary students practice {technique} early in their training.",
    )),
    _Topic(ANIMALS, ("animal", "habitat", "diet", "trait"), (
        "{animal} lives in {habitat}.",
        "The diet of {animal} consists mostly of {diet}.",
        "A remarkable fact about {animal} is that {trait}.",
        "Biologists who study {animal} in {habitat} have learned that {trait}.",
        "{animal} feeds on {diet}.",
    ), (
        "Field guides note that {animal} eats {diet} and that {trait}.",
        "You would look for {animal} in {habitat}.",
    )),
    _Topic(HISTORY, ("topic", "when", "summary"), (
        "Historians place {topic} {when}.",
        "The story of {topic} shows how {summary}.",
        "Students learning about {topic} discover that {summary}.",
        "{topic} is usually dated {when}.",
        "A turning point came with {topic}: {summary}.",
    ), (
        "Looking back at {topic} {when}, we see that {summary}.",
        "Museums about {topic} explain how {summary}.",
    )),
)
_LESSON_OPENERS = ("", "Here is a short lesson. ", "Let us review a few facts. ", "Did you know? ", "Study note: ")
GENERAL_PASSAGES_PER_ROW = 10


def _row_passage(topic: _Topic, row: tuple[str, ...], templates: tuple[str, ...], rng: random.Random) -> str:
    values = dict(zip(topic.fields, row))
    count = min(len(templates), rng.randint(3, 4))
    sentences = [cap(t.format(**values)) for t in rng.sample(templates, count)]
    return rng.choice(_LESSON_OPENERS) + " ".join(sentences)


def general_passages(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training passages, held-out passages) of educational prose on non-medical topics."""
    rng = random.Random(f"general-{seed}")
    train: list[str] = []
    heldout: list[str] = []
    for topic in _TOPICS:
        for row in topic.rows:
            variants = {_row_passage(topic, row, topic.sentences, rng) for _ in range(GENERAL_PASSAGES_PER_ROW)}
            train.extend(sorted(variants))  # sorted: set order is not stable across runs
            values = dict(zip(topic.fields, row))
            heldout.append(" ".join(cap(t.format(**values)) for t in topic.heldout))
    rng.shuffle(train)
    return train, heldout
