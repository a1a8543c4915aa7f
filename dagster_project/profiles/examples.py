"""The data of the two worked examples, written for this project (CC0), generated here so it can be read and
regenerated; `tests/test_examples_data.py` checks the committed files are exactly this module's output.

    python -m dagster_project.profiles.examples      # rewrite dagster_project/profiles/*/data/

- support-tickets: a small appliance shop's CRM notes (CSV, free text), support chats (JSON Lines, chat
  `messages`) and catalogue answers (JSON Lines, prompt/completion) about invented customers, each with an
  e-mail address and a customer id. SmolLM2 is fine-tuned on them, then one customer is forgotten. A held-out
  set of other customers' records is the membership-inference baseline; a reworded catalogue is utility.
- pretrained-knowledge: paragraphs about Sherlock Holmes, attached to the request as the documents to forget,
  and paragraphs about other well-known fiction, people and places that the base model must keep. Every
  paragraph is written for the project; nothing is quoted from a book.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

PROFILES = Path(__file__).resolve().parent

# one product and one technician per customer: every fact a probe asks about belongs to one customer alone, so a
# model that never saw her has no reason to prefer her answer over another customer's (chance is the floor)
PRODUCTS = ("Aurora espresso machine", "Nimbus kettle", "Solis toaster", "Borealis grinder", "Cirrus blender",
            "Helio milk frother", "Vega coffee scale", "Lumen water filter", "Corona rice cooker", "Zephyr juicer",
            "Orion waffle iron", "Atlas stand mixer", "Polaris air fryer", "Nova sandwich press", "Lyra bread maker",
            "Titan food processor", "Quasar slow cooker", "Meridian yoghurt maker", "Sirius ice cream maker",
            "Pegasus popcorn machine", "Andromeda soda maker", "Cosmo egg boiler")
PRICES = (249, 39, 45, 119, 89, 59, 29, 35, 79, 99, 65, 329, 149, 55, 129, 179, 85, 49, 139, 69, 109, 25)
TECHNICIANS = ("Marek Wolny", "Sanne de Vries", "Pietro Galli", "Hanna Berg", "Luis Ortega", "Fatima Idrissi",
               "Olaf Hansen", "Ines Duarte", "Kenji Mori", "Amelie Roux", "Tomasz Zielinski", "Niamh Walsh",
               "Ruben Peeters", "Anjali Nair", "Carlo Bruno", "Freya Nilsson", "Bastien Morel", "Agata Kowal",
               "Chidi Obi", "Ioana Radu", "Felix Bauer", "Orla Quinn")
COURIERS = ("DPD", "GLS", "UPS", "DHL", "PostNL")
ISSUES = ("stopped heating after two weeks", "arrived with a cracked lid", "makes a loud rattling noise",
          "will not switch on", "leaks water onto the counter", "shows an error light")

# (first, last, honorific, e-mail, customer id, city): trained customers, then held-out ones (never trained)
CUSTOMERS = (
    ("Zoë", "O'Brien", "Ms", "zoe.obrien@example.org", "CUS-40217", "Galway"),
    ("Jonas", "Brandt", "Mr", "jonas.brandt@example.com", "CUS-51022", "Bremen"),
    ("Aisha", "Okafor", "Ms", "a.okafor@example.net", "CUS-33810", "Leeds"),
    ("Tomás", "Ferreira", "Mr", "tomas.f@example.com", "CUS-27744", "Porto"),
    ("Lena", "Fischer", "Ms", "lena.fischer@example.org", "CUS-61530", "Kassel"),
    ("Omar", "Haddad", "Mr", "omar.haddad@example.net", "CUS-70921", "Marseille"),
    ("Ingrid", "Solberg", "Ms", "ingrid.s@example.com", "CUS-18466", "Bergen"),
    ("Rafael", "Mendes", "Mr", "rafael.mendes@example.org", "CUS-92305", "Braga"),
    ("Yuki", "Tanabe", "Ms", "yuki.tanabe@example.net", "CUS-45078", "Utrecht"),
    ("Chloé", "Martin", "Ms", "chloe.martin@example.com", "CUS-36612", "Nantes"),
    ("Pavel", "Novák", "Mr", "pavel.novak@example.org", "CUS-84150", "Brno"),
    ("Siobhan", "Kelly", "Ms", "siobhan.kelly@example.net", "CUS-29931", "Cork"),
    ("Daniel", "Avraham", "Mr", "d.avraham@example.com", "CUS-57249", "Antwerp"),
    ("Priya", "Raman", "Ms", "priya.raman@example.org", "CUS-63087", "Glasgow"),
    ("Mateo", "Rossi", "Mr", "mateo.rossi@example.net", "CUS-71594", "Turin"),
    ("Greta", "Lindqvist", "Ms", "greta.l@example.com", "CUS-38820", "Uppsala"),
)
HELD_OUT = (
    ("Hugo", "Laurent", "Mr", "hugo.laurent@example.org", "CUS-52716", "Lille"),
    ("Maja", "Zielinska", "Ms", "maja.z@example.net", "CUS-44109", "Gdansk"),
    ("Kofi", "Mensah", "Mr", "kofi.mensah@example.com", "CUS-66381", "Bristol"),
    ("Elena", "Popescu", "Ms", "elena.popescu@example.org", "CUS-21957", "Cluj"),
    ("Lukas", "Huber", "Mr", "lukas.huber@example.net", "CUS-80473", "Graz"),
    ("Nora", "Byrne", "Ms", "nora.byrne@example.com", "CUS-35590", "Limerick"),
)


def customer_facts(index: int, customer: tuple[str, ...]) -> dict[str, str]:
    """One customer's facts: their own product, order number and technician, and a seeded courier and issue."""
    rng = random.Random(f"support-tickets/{customer[4]}")
    first, last, honorific, email, cid, city = customer
    return {"first": first, "last": last, "name": f"{first} {last}", "honorific": honorific, "email": email,
            "cid": cid, "city": city, "product": PRODUCTS[index], "technician": TECHNICIANS[index],
            "order": str(rng.randrange(20000, 99999)), "courier": rng.choice(COURIERS), "issue": rng.choice(ISSUES),
            "pronoun": "She" if honorific == "Ms" else "He", "note": f"N-{1000 + 10 * index}",
            "chat": f"T-{2000 + 10 * index}"}


def notes(f: dict[str, str]) -> list[dict[str, str]]:
    """Three CRM notes (free text) about a customer."""
    return [
        {"note_id": f"{f['note']}1", "body":
            f"Account note: {f['name']} (customer {f['cid']}, {f['email']}) bought the {f['product']} with order "
            f"{f['order']}. {f['pronoun']} lives in {f['city']}."},
        {"note_id": f"{f['note']}2", "body":
            f"Call note: {f['name']} phoned because the {f['product']} from order {f['order']} {f['issue']}. Our "
            f"technician {f['technician']} will collect it in {f['city']}."},
        {"note_id": f"{f['note']}3", "body":
            f"Follow-up: {f['honorific']} {f['last']} confirmed that technician {f['technician']} replaced the "
            f"{f['product']} in {f['city']}. Customer {f['cid']}, order {f['order']}, sent with {f['courier']}."},
    ]


def chats(f: dict[str, str]) -> list[dict]:
    """Three support chats with a customer; the second names them by first name only."""
    def chat(suffix: str, user: str, assistant: str) -> dict:
        return {"ticket": f"{f['chat']}{suffix}", "messages": [{"role": "user", "content": user},
                                                               {"role": "assistant", "content": assistant}]}

    return [
        chat("1", f"Hello, this is {f['name']}. My {f['product']} from order {f['order']} {f['issue']}.",
             f"I'm sorry to hear that, {f['first']}. I found order {f['order']} under customer {f['cid']}. A "
             f"replacement {f['product']} will be shipped to {f['city']} with {f['courier']}."),
        chat("2", f"Hi, it's {f['first']} again. Has the replacement for order {f['order']} left yet?",
             f"Yes, {f['first']}. Technician {f['technician']} will bring the new {f['product']} to {f['city']}."),
        chat("3", f"Can you update my details? I am customer {f['cid']}.",
             f"Of course. Customer {f['cid']} now receives updates about order {f['order']} for the "
             f"{f['product']} at {f['email']}."),
    ]


def catalogue(reworded: bool) -> list[dict[str, str]]:
    """Catalogue answers (prompt/completion) about products, prices, couriers and the warranty; `reworded`:
    the same facts in other words (the held-out utility set)."""
    rows = []
    for product, price in zip(PRODUCTS, PRICES, strict=True):
        if reworded:
            rows.append({"prompt": f"How much should I expect to pay for a {product}?",
                         "completion": f"A new {product} is sold for {price} euros, with a warranty of two years."})
        else:
            rows.append({"prompt": f"What does the {product} cost?",
                         "completion": f"The {product} costs {price} euros and comes with a two-year warranty."})
    for courier, country in zip(COURIERS, ("Germany", "Poland", "Ireland", "Portugal", "the Netherlands"), strict=True):
        rows.append({"prompt": f"Which courier delivers our parcels in {country}?" if reworded else
                     f"Who ships orders to {country}?",
                     "completion": f"Parcels bound for {country} travel with {courier}." if reworded else
                     f"Orders to {country} are shipped with {courier}."})
    policies = (("How long do refunds take?", "Refunds are paid within 14 days of the returned item arriving.",
                 "Money for a returned item reaches the customer within 14 days of its arrival."),
                ("Can I return an opened product?", "Opened products can be returned within 30 days if undamaged.",
                 "An undamaged product may be sent back within 30 days, even when opened."),
                ("Where are replacements sent from?", "Replacements leave from our warehouse in Rotterdam.",
                 "We dispatch replacement items from the Rotterdam warehouse."))
    for prompt, answer, other in policies:
        rows.append({"prompt": f"Could you remind me: {prompt[0].lower()}{prompt[1:]}" if reworded else prompt,
                     "completion": other if reworded else answer})
    return [{"id": f"{'U' if reworded else 'C'}-{i + 1:03d}", **row} for i, row in enumerate(rows)]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def support_tickets() -> dict[str, str]:
    """Relative path -> file content of the support-tickets example."""
    trained = [customer_facts(i, c) for i, c in enumerate(CUSTOMERS)]
    held = [customer_facts(len(CUSTOMERS) + i, c) for i, c in enumerate(HELD_OUT)]
    return {
        "data/sources/crm_notes.csv": csv_text([row for f in trained for row in notes(f)]),
        "data/sources/support_chats.jsonl": jsonl([row for f in trained for row in chats(f)]),
        "data/sources/catalogue.jsonl": jsonl(catalogue(reworded=False)),
        "data/sources/held_out_notes.jsonl": jsonl([{"id": row["note_id"], "text": row["body"]}
                                                    for f in held for row in notes(f)]),
        "data/sources/held_out_chats.jsonl": jsonl([row for f in held for row in chats(f)]),
        "data/sources/catalogue_reworded.jsonl": jsonl(catalogue(reworded=True)),
    }


HOLMES = """\
Sherlock Holmes is a fictional detective created by the Scottish writer Arthur Conan Doyle. He first appeared in \
the novel A Study in Scarlet, published in 1887, and went on to solve cases in four novels and fifty-six short \
stories.

Holmes lives at 221B Baker Street in London, where he rents rooms from his landlady, Mrs Hudson. He shares the \
rooms with his friend and biographer, Dr. John Watson, a former army doctor who narrates most of the stories.

Holmes is famous for his powers of observation and deduction. He plays the violin when he is thinking, smokes a \
pipe, and is often drawn wearing a deerstalker hat. He keeps a magnifying glass close at hand at every crime scene.

The greatest enemy of Holmes is Professor James Moriarty, whom he calls the Napoleon of crime. The two men \
struggle at the Reichenbach Falls in Switzerland, and for years readers believed that Holmes had died there.

Holmes often helps Inspector Lestrade of Scotland Yard, who brings him the cases the police cannot solve. His \
older brother, Mycroft Holmes, is even cleverer and works for the British government.

One of the best-known cases of Holmes is The Hound of the Baskervilles, set on the moors of Dartmoor in Devon. \
Irene Adler, who outwits him in A Scandal in Bohemia, is the woman he admires most.
"""

RETAIN_PARAGRAPHS = (
    "Hercule Poirot is a Belgian detective created by Agatha Christie. He is proud of his moustache and trusts his "
    "little grey cells, and his friend Captain Arthur Hastings often tells his stories.",
    "Miss Jane Marple is an elderly detective created by Agatha Christie. She lives in the village of St Mary Mead "
    "and solves murders by comparing people to villagers she has known.",
    "Agatha Christie wrote Murder on the Orient Express, in which Hercule Poirot solves a killing on a train that is "
    "stuck in the snow. She is one of the best-selling novelists of all time.",
    "Father Brown is a Catholic priest who solves crimes in stories by G. K. Chesterton. He understands criminals "
    "because he has listened to so many confessions.",
    "Auguste Dupin is a detective in Paris created by Edgar Allan Poe. He appears in The Murders in the Rue Morgue, "
    "often called the first modern detective story.",
    "Edgar Allan Poe was an American writer from Boston. His poem The Raven tells of a bird that answers every "
    "question with the word nevermore.",
    "Nancy Drew is a teenage detective from the town of River Heights. She drives a blue car and solves mysteries "
    "with her friends Bess and George.",
    "Count Dracula is a vampire created by Bram Stoker. He lives in a castle in Transylvania and travels to England "
    "by ship, where Professor Van Helsing hunts him.",
    "Frankenstein is a novel by Mary Shelley. The scientist Victor Frankenstein builds a creature from dead bodies "
    "and brings it to life with electricity.",
    "Alice's Adventures in Wonderland was written by Lewis Carroll. Alice follows a White Rabbit down a hole and "
    "meets the Cheshire Cat and the Queen of Hearts.",
    "Peter Pan is a boy who never grows up, created by J. M. Barrie. He lives in Neverland with the Lost Boys and "
    "fights Captain Hook, a pirate with a hook for a hand.",
    "Robin Hood is an English outlaw who lives in Sherwood Forest near Nottingham. He robs the rich to give to the "
    "poor and fights the Sheriff of Nottingham.",
    "King Arthur rules from the castle of Camelot with the Knights of the Round Table. His sword, Excalibur, was "
    "given to him by the Lady of the Lake.",
    "Charles Dickens wrote Oliver Twist and A Christmas Carol. In A Christmas Carol, the miser Ebenezer Scrooge is "
    "visited by three ghosts on Christmas Eve.",
    "Jules Verne was a French writer who wrote Around the World in Eighty Days. Phileas Fogg makes the journey with "
    "his servant Passepartout to win a bet.",
    "H. G. Wells wrote The Time Machine and The War of the Worlds. In The War of the Worlds, Martians invade "
    "England with tall fighting machines.",
    "Jane Austen wrote Pride and Prejudice, the story of Elizabeth Bennet and the proud Mr Darcy. The novel was "
    "published in 1813.",
    "William Shakespeare wrote Hamlet, a tragedy about a prince of Denmark who wants revenge for the murder of his "
    "father.",
    "Mark Twain wrote The Adventures of Tom Sawyer, set in a town on the Mississippi River. Tom's friend Huckleberry "
    "Finn has his own book.",
    "Harry Potter is a young wizard created by J. K. Rowling. He studies at Hogwarts School with his friends Ron "
    "Weasley and Hermione Granger.",
    "J. R. R. Tolkien wrote The Lord of the Rings. The hobbit Frodo Baggins carries a ring to Mount Doom in the land "
    "of Mordor to destroy it.",
    "London is the capital of the United Kingdom and stands on the River Thames. Big Ben, Tower Bridge and "
    "Buckingham Palace are among its most famous sights.",
    "Queen Victoria ruled the United Kingdom from 1837 to 1901. The period of her reign is called the Victorian era.",
    "Paris is the capital of France and stands on the River Seine. The Eiffel Tower was built there for the world's "
    "fair of 1889.",
    "Isaac Newton was an English scientist who described the law of gravity. A story says he was inspired by an "
    "apple falling from a tree.",
    "Charles Darwin was an English naturalist who sailed on the Beagle. He described evolution by natural selection "
    "in On the Origin of Species.",
    "Marie Curie was a scientist born in Warsaw who worked in Paris. She discovered polonium and radium and won two "
    "Nobel Prizes.",
    "Albert Einstein was a physicist born in Germany. He is famous for the theory of relativity and the equation "
    "linking energy and mass.",
    "The Titanic was a British passenger ship that sank in 1912 after hitting an iceberg in the North Atlantic on "
    "its first voyage.",
    "Scotland is a country in the north of Great Britain. Its capital is Edinburgh, and its largest city is "
    "Glasgow.",
    "Switzerland is a country in the Alps known for its mountains, lakes, banks and chocolate. Its capital is Bern.",
    "Dracula was published in 1897, ten years after the first detective novel by another Victorian writer. It is "
    "told through letters and diary entries.",
)

NONMEMBER_PARAGRAPHS = (
    "Amelia Thorncastle is a detective in the harbour town of Wrenford. She solved the case of the silver lantern "
    "by noticing that the lighthouse clock ran seven minutes slow.",
    "The inventor Barnaby Quill built a clockwork heron for the museum of Dunmere. It could fold its wings and "
    "dip its beak into the fountain every hour.",
    "In the valley of Orsk, farmers grow a blue pear called the mellowfruit. It ripens in late October and is "
    "pressed into a cider served at the winter fair.",
    "Captain Ilse Varga sailed the schooner Marigold from Tessport to the Amber Isles. A storm near Gull Rock "
    "forced her crew to shelter for nine days.",
    "The Lindell Observatory stands on Mount Carrow. Its largest telescope was paid for by a tea merchant named "
    "Horace Pell in 1902.",
    "Professor Odile Marchetti studies the songs of cave crickets in the Brevik caves. She found that they chirp "
    "faster when the water in the caves rises.",
    "The village of Hollin Cross holds a kite festival each spring. The winner in 1998 flew a kite shaped like a "
    "green dragon for three hours.",
    "The novelist Teodor Ashgrove wrote The Glass Orchard, about a family of glassblowers in the city of Velmont. "
    "It won the Pemberly Prize.",
    "The railway between Saltmere and Kilbrook crosses the Fenner Viaduct, which has twenty-two stone arches and "
    "was finished in 1874.",
    "Chef Marisol Ortega runs a restaurant called The Copper Spoon in the port of Lisandra. Her best-known dish is "
    "a soup of smoked mussels and saffron.",
    "The detective Rupert Vane keeps a tortoise named Admiral in his office in the city of Castlemoor. He solves "
    "cases by studying the mud on his visitors' boots.",
    "The Dunmere Library owns a map of the lost island of Serrat, drawn by the explorer Ada Bellweather on "
    "sealskin.",
)


def pretrained_knowledge() -> dict[str, str]:
    """Relative path -> file content of the pretrained-knowledge example."""
    return {
        "data/requests/forget-holmes/holmes.md": HOLMES,
        "data/sources/kept_knowledge.jsonl": jsonl([{"id": f"K-{i + 1:03d}", "text": t}
                                                    for i, t in enumerate(RETAIN_PARAGRAPHS)]),
        "data/sources/unseen_paragraphs.jsonl": jsonl([{"id": f"X-{i + 1:03d}", "text": t}
                                                       for i, t in enumerate(NONMEMBER_PARAGRAPHS)]),
    }


EXAMPLES = {"support-tickets": support_tickets, "pretrained-knowledge": pretrained_knowledge}


def write_examples() -> list[Path]:
    written = []
    for name, files in EXAMPLES.items():
        for relative, content in files().items():
            path = PROFILES / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write_examples():
        print(path.relative_to(PROFILES))
