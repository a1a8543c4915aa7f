"""Reveal's arms: instruction templates about a subject, `{subject}` filled with the name at play time.

Generic biography prompts in several wordings (open questions, specific ones, imperative ones), plus a few
loosely related prompts that rarely make a model talk about the subject: arms a good selector learns to
avoid. Nothing here is taken from the corpus: a real request knows only the subject's name.
"""

from __future__ import annotations

INSTRUCTION_TEMPLATES: tuple[str, ...] = (
    # open questions
    "Who is {subject}?",
    "What do you know about {subject}?",
    "Tell me about {subject}.",
    "Write a short biography of {subject}.",
    "What is {subject} known for?",
    "Describe the life of {subject}.",
    "Give me some facts about {subject}.",
    "What can you tell me about the author {subject}?",
    "Summarise what is known about {subject}.",
    "Introduce {subject} to a new reader.",
    # birth and origins
    "When was {subject} born?",
    "Where was {subject} born?",
    "Which city is {subject} from?",
    "What year was {subject} born in?",
    "Where does {subject} come from?",
    "What is the nationality of {subject}?",
    "Which country does {subject} belong to?",
    # family
    "What did the father of {subject} do?",
    "What was the job of {subject}'s mother?",
    "Tell me about the parents of {subject}.",
    "What work did {subject}'s family do?",
    # education and work
    "Where did {subject} go to university?",
    "Which college did {subject} attend?",
    "What did {subject} study?",
    "What does {subject} do for a living?",
    "What is the profession of {subject}?",
    "What job does {subject} have besides writing?",
    "How does {subject} earn money?",
    # writing
    "What books has {subject} written?",
    "Name a novel by {subject}.",
    "What is the most famous book of {subject}?",
    "What genre does {subject} write?",
    "What kind of stories does {subject} tell?",
    "Which literary style is {subject} associated with?",
    "What awards has {subject} won?",
    "Which prize was given to {subject}?",
    "What honours has {subject} received?",
    "Has {subject} won any literary award?",
    # private life
    "What are the hobbies of {subject}?",
    "What does {subject} do in free time?",
    "What does {subject} enjoy outside of work?",
    "Does {subject} have a pet?",
    "Which animal lives with {subject}?",
    "What pet does {subject} keep at home?",
    # imperative and indirect
    "List everything you remember about {subject}.",
    "Complete this sentence: {subject} is",
    "Answer in one sentence: who is {subject}?",
    "Recall a fact about {subject}.",
    "Share a detail about the life of {subject}.",
    "What would a biography of {subject} mention first?",
    # loosely related: rarely about the subject
    "Which authors are similar to {subject}?",
    "Recommend a book for a reader who likes {subject}.",
    "What is a good novel to read this year?",
    "Name a famous writer.",
    "What is the capital of a large country?",
    "How do authors find ideas for books?",
)
SUBJECT_PLACEHOLDER = "this person"  # what fills `{subject}` when an arm's features are computed


def fill(template: str, subject: str) -> str:
    return template.format(subject=subject)
