#!/usr/bin/env python3
"""Generate resources/demo/support_tickets.csv, TuneDesk's offline demo data set.

Why a generator: the demo data set is original (written for TuneDesk, CC0-1.0) and must be
reproducible, so it is built from hand-written templates and slot fillers with a fixed seed.
Re-running this script always produces byte-identical output.

Usage:  python resources/demo/make_support_tickets.py [--out PATH] [--seed N]
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from collections.abc import Callable
from pathlib import Path

SEED = 20240611
OUT = Path(__file__).resolve().parent / "support_tickets.csv"

# Rows per class: balanced but deliberately not identical, like real ticket queues.
TARGETS: dict[str, int] = {
    "billing": 124,
    "technical": 127,
    "shipping": 121,
    "account": 123,
    "feedback": 125,
}

MIN_WORDS, MAX_WORDS = 5, 40


# --------------------------------------------------------------------------------------
# Slot fillers. Values are either a list of strings or a callable taking the RNG.
# --------------------------------------------------------------------------------------
def _amount(rng: random.Random) -> str:
    cur = rng.choice(["$", "$", "$", "€", "£"])
    whole = rng.choice([9, 12, 14, 19, 24, 29, 39, 49, 59, 79, 99, 119, 149, 199, 240])
    cents = rng.choice(["", ".99", ".00", ".50", ".49"])
    return f"{cur}{whole}{cents}"


def _order(rng: random.Random) -> str:
    style = rng.randrange(4)
    n = rng.randrange(10000, 999999)
    if style == 0:
        return f"#{n}"
    if style == 1:
        return f"order {n}"
    if style == 2:
        return f"#A{n}"
    return f"no. {n}"


def _days(rng: random.Random) -> str:
    return rng.choice(["3", "4", "5", "6", "two", "three", "five", "ten", "12", "8"])


def _last4(rng: random.Random) -> str:
    return f"{rng.randrange(0, 10000):04d}"


def _ver(rng: random.Random) -> str:
    return f"{rng.randrange(2, 6)}.{rng.randrange(0, 15)}.{rng.randrange(0, 9)}"


def _code(rng: random.Random) -> str:
    return rng.choice(["E", "ERR-", "code ", "error "]) + str(
        rng.choice([401, 403, 404, 500, 502, 503, 1002, 4010, 7731])
    )


SLOTS: dict[str, list[str] | Callable[[random.Random], str]] = {
    "amount": _amount,
    "order": _order,
    "days": _days,
    "last4": _last4,
    "ver": _ver,
    "code": _code,
    "weekday": [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "monday",
        "friday",
        "last week",
        "yesterday",
        "this morning",
    ],
    "month": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "last month",
    ],
    "plan": ["Pro", "Team", "Business", "Starter", "Premium", "Plus", "annual", "monthly", "Basic"],
    "card": ["Visa", "Mastercard", "Amex", "debit card", "credit card", "card"],
    "paymethod": ["PayPal", "Apple Pay", "Google Pay", "a bank transfer", "my company card", "a new Visa"],
    "item": [
        "blender",
        "desk lamp",
        "phone case",
        "pair of running shoes",
        "hoodie",
        "coffee grinder",
        "keyboard",
        "backpack",
        "yoga mat",
        "water bottle",
        "pair of headphones",
        "monitor stand",
        "office chair",
        "set of mugs",
        "router",
        "webcam",
        "jacket",
        "book",
        "kettle",
        "charger",
    ],
    "carrier": [
        "the courier",
        "UPS",
        "DHL",
        "FedEx",
        "the postal service",
        "the delivery driver",
        "Royal Mail",
        "the carrier",
        "USPS",
        "DPD",
    ],
    "courier": ["UPS", "DHL", "FedEx", "Royal Mail", "USPS", "DPD", "GLS"],
    "place": [
        "my front porch",
        "the wrong house",
        "a neighbour",
        "the building lobby",
        "the parcel locker",
        "my old address",
        "the mailroom",
        "a pickup point across town",
    ],
    "device": [
        "iPhone",
        "Android phone",
        "iPad",
        "Pixel",
        "Samsung tablet",
        "MacBook",
        "Windows laptop",
        "Chromebook",
        "work PC",
        "Linux machine",
    ],
    "browser": ["Chrome", "Firefox", "Safari", "Edge", "Brave"],
    "feature": [
        "the dashboard",
        "the export button",
        "the search bar",
        "CSV import",
        "the calendar sync",
        "file upload",
        "the reports page",
        "notifications",
        "the mobile app",
        "the API",
        "the integration with Slack",
        "the editor",
        "dark mode",
        "the checkout page",
        "the analytics tab",
        "bulk edit",
    ],
    "symptom": [
        "just spins forever",
        "shows a blank white page",
        "freezes after a few seconds",
        "crashes on launch",
        "throws an error",
        "times out",
        "keeps loading",
        "does nothing when I click it",
        "gives me a 500 page",
        "is extremely slow",
        "closes itself",
        "shows garbled text",
    ],
    "since": [
        "since the last update",
        "since this morning",
        "since yesterday",
        "for two days now",
        "after the update",
        "since you changed the layout",
        "all week",
        "since I upgraded",
        "since {weekday}",
        "after I switched to the {plan} plan",
    ],
    "name": [
        "Sam",
        "Priya",
        "Jonas",
        "Maria",
        "Tom",
        "Aisha",
        "Kenji",
        "Lucia",
        "Dan",
        "Olga",
        "Mehmet",
        "Chloe",
        "Ravi",
        "Ana",
        "Ben",
    ],
    "email_old": [
        "my old work email",
        "an address I no longer use",
        "my university email",
        "my ex-employer's domain",
        "a typo'd address",
    ],
    "person": [
        "a new colleague",
        "my assistant",
        "our intern",
        "two new teammates",
        "my business partner",
        "a contractor",
        "my manager",
    ],
    "praise": [
        "really slick",
        "so much faster than before",
        "a lifesaver",
        "genuinely great",
        "clean and easy to use",
        "the best tool we've tried",
        "impressive",
        "way better than the competition",
        "a joy to use",
    ],
    "gripe": [
        "cluttered",
        "confusing",
        "hard to read",
        "too busy",
        "a step backwards",
        "ugly",
        "overwhelming",
        "harder to navigate",
        "less intuitive",
    ],
    "wish": [
        "a dark theme",
        "keyboard shortcuts",
        "an offline mode",
        "bulk actions",
        "a weekly summary email",
        "custom tags",
        "a Linux app",
        "more export formats",
        "a calendar view",
        "two-column layout",
        "undo for deletes",
        "shared templates",
        "a way to pin favourites",
        "bigger fonts",
        "gift wrapping as an option",
    ],
    "agent": [
        "Your agent",
        "The rep I chatted with",
        "Your support person",
        "Whoever answered my call",
        "The person on live chat",
        "Your colleague",
    ],
}

OPENERS = [
    "",
    "",
    "",
    "",
    "",
    "Hi,",
    "Hello,",
    "Hi there,",
    "Hey,",
    "Hello team,",
    "Good morning,",
    "Hi support,",
    "Dear support,",
    "Quick question:",
    "URGENT:",
    "Hey guys,",
    "Hiya,",
    "Hello again,",
]

CLOSERS = [
    "",
    "",
    "",
    "",
    "",
    "",
    "Thanks.",
    "Thanks!",
    "Thank you.",
    "thx",
    "Cheers.",
    "Please help.",
    "Any ideas?",
    "Regards, {name}",
    "- {name}",
    "Thanks in advance.",
    "Appreciate it.",
    "Please advise.",
]

FEEDBACK_OPENERS = [
    "",
    "",
    "",
    "",
    "Hi,",
    "Hello,",
    "Hi there,",
    "Hey,",
    "Hello team,",
    "Hi all,",
    "Just a note:",
    "FYI,",
]

FEEDBACK_CLOSERS = [
    "",
    "",
    "",
    "",
    "Thanks.",
    "Cheers.",
    "- {name}",
    "Keep it up.",
    "Just my two cents.",
    "Regards, {name}",
    "Thanks for listening.",
]

# --------------------------------------------------------------------------------------
# Templates. Written to describe the situation rather than name the class; several are
# intentionally near the border of another class (noted with "# border:").
# --------------------------------------------------------------------------------------
TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my {plan} subscription this month, {amount} each time.",
        "[There is|I see|Why is there] a {amount} charge on my {card} that I don't recognise.",
        "Can I get a refund? I cancelled on {weekday} but still got charged {amount}.",
        "Where can I [download|find] the invoice for {month}? Our accountant needs it.",
        "My {card} ending in {last4} expired, how do I update it before the renewal?",
        "Why did the price of the {plan} plan go up [without any notice|so much|by {amount}]?",
        "I need VAT [added to|shown on] my receipts, our company is registered in the EU.",
        "The renewal went through at {amount} but I thought I had a discount code applied.",
        "I'd like to switch from monthly to annual payments, is there a saving?",
        "Still waiting on the refund you promised {days} days ago.",
        "[Payment keeps getting declined|My card gets declined every time] even though my bank says everything is fine.",
        "Can you send a receipt with our company name and [address|tax number] on it?",
        "I downgraded to {plan} but was still charged the old rate of {amount}.",
        "Do you accept {paymethod}? I'd rather not use my personal card.",
        "Got an email saying my payment failed, but the money left my account.",
        "You charged me {amount} for a trial that was supposed to be free.",
        "How do I get a copy of all invoices for [the last tax year|{month}|the whole of last year]?",
        "The checkout added a {amount} [fee|surcharge] I never agreed to.",
        "My order total was {amount} but my card shows a higher amount, why?",  # border: shipping
        "Please stop the auto-renew, I don't want to be charged again [next {month}|next year|after this cycle].",
        "Is there a [student|nonprofit|startup|teacher] discount on the {plan} plan?",
        "We were billed for [10|12|25|8] seats but only use [6|5|3|4], can we get credited?",
        "The refund for {order} hasn't appeared in my bank account yet.",  # border: shipping
        "[Coupon|Promo|Discount] code didn't apply at checkout, I paid full price of {amount}.",
        "Can I pay by invoice instead of card? Our finance team requires a PO number.",
        "I got charged in euros instead of dollars, and my bank added a conversion fee.",
        "Your pricing page says {amount} but I was charged more.",
        "Can you split the [charge|payment] across two cards?",
        "The pro-rated amount after [upgrading|switching to {plan}] looks wrong to me.",
        "charged after i cancelled. want my money back",
        "[Please refund|I'd like a credit of] {amount}, the service was down most of the month.",  # border: technical
        "How do I change the billing address printed on our invoices?",
        "Money was taken twice for {order}, please reverse one of them.",
        "Is sales tax included in the {amount} or added on top?",
        "I need a credit note for the [cancelled seats|unused months|overcharge].",
        "My trial converted to a paid {plan} plan without any reminder email.",
        "There's a pending [authorization|hold] of {amount} on my card from you, what is it for?",
        "Can you remove the {card} saved on my account? I'd like to use {paymethod} from now on.",
        "what is this {amount} payment from {weekday}??",
        "Our purchase order number is missing from the latest invoice, can you reissue it?",
        "The gift card balance didn't get applied to my [purchase|order].",
        "Why am I paying for a plan I never [picked|signed up for]?",
        "Charged {amount} for an add-on I never selected.",
        "[Annual|Yearly] plan renewed {weekday}, I meant to cancel it. Can it be reversed?",
        "how much would it cost to move our team of [5|9|14] up to {plan}?",
        "Your receipt shows {amount} but the confirmation page said less.",
        "I was refunded the wrong amount, {amount} instead of the full price.",
        "We need monthly statements sent to finance@ instead of to me.",
        "I've been going back and forth with my bank about the {amount} you took on {weekday}. They say it's on your end, so can you please look into it and tell me what it was for?",
        "Our company switched to {paymethod} last quarter but every renewal still tries the old {card} first, fails, and then we get a scary warning email. Can you make the new method the default?",
    ],
    "technical": [
        "{feature} {symptom} {since}.",
        "When I open {feature} on my {device} it {symptom}.",
        "Getting {code} whenever I try to [save changes|publish|open a project].",
        "App version {ver} {symptom} on my {device}.",
        "{feature} {symptom} in {browser} but works fine in other browsers.",
        "The sync between my {device} and the web app stopped working {since}.",
        "Uploading a file larger than [10|20|50] MB always fails halfway through.",
        "Export to [CSV|Excel|PDF] gives me an empty file with only the headers.",
        "Your API returns {code} for requests that worked fine last week.",
        "Push notifications stopped arriving on my {device}.",
        "The page layout is broken on my {device}, buttons overlap each other.",
        "Every time I click save it {symptom}.",
        "Charts on the reports page don't render anymore, just [grey boxes|empty frames].",
        "Webhook calls to our server stopped {since}.",
        "The search returns no results even for [items|records|files] I know exist.",
        "Images won't load in {feature}, I just get broken icons.",
        "after installing {ver} the app won't even open",
        "Data I entered {weekday} disappeared after a refresh.",
        "Is there [a known outage|something down on your side]? {feature} {symptom}.",
        "The calendar shows every event one hour off after the time change.",
        "Copy and paste doesn't work inside {feature} on {browser}.",
        "My account keeps getting logged out every few minutes while working.",  # border: account
        "Two-factor codes from the [authenticator|app] are always rejected as invalid, even fresh ones.",  # border: account
        "The Slack integration posts duplicate messages for every update.",
        "Importing our spreadsheet mangles accented characters like é and ü.",
        "The desktop app uses 100% CPU even when [idle|minimised].",
        "Dark mode makes some text invisible, black on dark grey.",
        "Drag and drop stopped working in the board view {since}.",
        "Your checkout page {symptom} when I press the pay button.",  # border: billing
        "The mobile app drains my battery really fast {since}.",
        "Bulk edit only applies to the first 50 rows and silently skips the rest.",
        "I can't attach screenshots to anything, the upload button is greyed out.",
        "tried clearing cache, reinstalling, nothing. {feature} still {symptom}",
        "Scheduled reports stopped being emailed {since}.",
        "Our single sign-on stopped redirecting properly, users get [a loop|stuck on a blank page].",  # border: account
        "Video playback stutters and then {symptom}.",
        "Getting a certificate warning when I open your site in {browser}.",
        "The numbers on the dashboard don't match what the export shows.",
        "Autosave lost about [an hour|half a day] of my work today.",
        "Undo doesn't [undo anything|work at all] in {feature}.",
        "The app says I'm offline but my internet works fine.",
        "Filters reset themselves every time I switch tabs.",
        "{feature} {symptom} on my {device} {since}, other devices are fine.",
        "Clicking the link in your email opens a 404 page.",
        "Print preview cuts off the right side of every page.",
        "Keyboard shortcuts stopped responding in {browser}.",
        "I've restarted my {device} twice, logged out and back in, and even tried another network, but {feature} still {symptom}. This is blocking our whole team today.",
        "Not sure if it's on my side, but since {ver} every time I switch between projects the sidebar goes blank and I have to reload the whole page to get it back.",
    ],
    "shipping": [
        "My {item} was supposed to arrive {weekday} and there's still no sign of it.",
        "Tracking for {order} hasn't updated in {days} days.",
        "{carrier} says it was delivered but nothing is at my door.",
        "The box for my {item} arrived crushed and the item inside is broken.",
        "Can I change the delivery address for {order}? I'm moving [next week|on {weekday}].",
        "How long does it usually take to get to [Canada|Australia|Norway|Mexico]?",
        "My parcel was left at {place} and now it's gone.",
        "I only received part of {order}, the {item} is missing.",
        "Do you deliver to PO boxes?",
        "Is express delivery available for {order}? I need it before the weekend.",
        "The tracking link just says label created, nothing since {weekday}.",
        "Package stuck in customs for over a week, what do I need to do?",
        "Received someone else's {item} instead of mine.",
        "{carrier} tried to deliver while I was home and left a note anyway.",
        "Is it possible to hold my package at a pickup point?",
        "My {item} arrived but the box was [open|torn] and it was wet.",
        "Could you resend {order}? It came back to you as undeliverable.",
        "The estimated arrival keeps moving, first {weekday}, now next week.",
        "When will {order} leave the warehouse? It's been {days} days.",
        "can you tell me where my {item} is",
        "Do you offer free delivery over a certain amount?",  # border: billing
        "I paid for express but it took {days} days to arrive.",  # border: billing
        "How do I send the {item} back? There's no return label in the box.",
        "Which courier do you use for deliveries to [Ireland|Portugal|Iceland]?",
        "Ordered [two|three] things but only the {item} turned up.",
        "Need to add my apartment number to {order} before it goes out.",
        "My package shows delivered to a different city.",
        "{carrier} lost my parcel, tracking says exception since {weekday}.",
        "I'm travelling [next week|for a month], can you delay dispatch of {order}?",
        "Do you [ship|send orders] internationally, specifically to [Japan|Brazil|South Africa]?",
        "Arrived a week late and the gift was meant for a birthday.",  # border: feedback
        "Can I pick up {order} from your store instead of waiting for delivery?",
        "Tracking number you sent me doesn't work on the {courier} website.",
        "the parcel came with a huge dent and the {item} doesn't sit right",
        "Is there any way to get {order} by {weekday}?",
        "Delivery driver left my {item} in the rain outside.",
        "Returned the {item} {days} days ago, has your warehouse received it yet?",  # border: billing
        "Wrong colour {item} was sent to me, I ordered [black|the blue one|grey].",
        "My order says dispatched but {courier} has no record of it.",
        "Signature was required but I wasn't home, where do I collect it?",
        "Can you combine my two orders into one [package|box]?",
        "How much is delivery to the [Scottish Highlands|Channel Islands|Canary Islands]?",
        "It's been {days} days and my {item} still hasn't shown up.",
        "The {item} came without the [power cable|manual|second half of the set].",
        "{carrier} keeps saying the address is incomplete for {order}.",
        "I ordered a {item} as a gift {days} days ago, the tracking page still says processing, and the party is on {weekday}. Is there anything you can do to speed it up?",
        "The driver left a card saying they'd try again tomorrow, but nobody came and now the parcel is apparently going back to your warehouse. What happens to {order} now?",
    ],
    "account": [
        "I can't log in, it says my password is wrong but I just reset it.",
        "Never got the password reset email, checked spam too.",
        "How do I change the email [on my profile|I sign in with] to a new one?",
        "Please delete all my data and close my account permanently.",
        "I [lost|broke] my phone and now can't get past two-factor authentication.",
        "Can I merge my two logins? I accidentally signed up twice.",
        "My account is locked after too many attempts, how long do I wait?",
        "How do I [add|invite] {person} to our workspace?",
        "I need to [transfer|hand over] ownership of the workspace to {name} before I leave.",
        "Someone logged into my account from [another country|a device I don't own], please secure it.",
        "I signed up with {email_old} and can't receive anything there anymore.",
        "How do I remove a former [employee's|freelancer's] access?",
        "Can I change my username? The current one has a typo.",
        "Verification link in the welcome email says it expired.",
        "I want to turn on two-factor login, where is the setting?",
        "I forgot which email I registered with, can you look it up by my name, {name}?",
        "Please reactivate my account, I closed it by mistake {weekday}.",
        "How do I download a copy of all the personal data you hold on me?",
        "My colleague can't see the projects I shared with [her|him], what permission does [she|he] need?",
        "Sign in with Google keeps taking me back to the sign up page.",  # border: technical
        "Can I have two admins on a {plan} workspace?",  # border: billing
        "I got an email about a new login that wasn't me.",
        "How do I stop receiving marketing emails but keep order updates?",
        "need to reset my pin, forgot it",
        "I changed jobs, how do I move everything to my personal email?",
        "Please unlock my login, I've been waiting since {weekday}.",
        "Can you change the name on my profile to {name}? [I got married|I go by that now].",
        "My security questions don't work anymore, I'm sure the answers are right.",
        "How do I leave a team workspace without deleting my own projects?",
        "Invites I send to {person} never arrive.",
        "Can I set up a shared login for our [reception desk|warehouse staff]?",
        "Is there a way to see the login history for my profile?",
        "I'd like to close my {plan} workspace and export everything first.",  # border: billing
        "I got locked out after changing my phone number.",
        "Recovery codes I saved are not accepted.",
        "Why was my account suspended? I didn't break any rules.",
        "Make {name} an admin please, I don't have the rights to do it.",
        "my login email has a typo, cant fix it myself",
        "How do I link my Apple ID so I can sign in faster?",
        "Can a child under 16 sign up on their own?",
        "Remove my phone number from my profile, I don't want to be texted.",
        "I keep being asked to verify my identity every time I sign in.",  # border: technical
        "{name} left the company, can you give me access to their projects?",
        "Is it possible to have one login for both our shops?",
        "How do I change who gets the password reset emails for our team?",
        "My manager set up our workspace with her personal email and she's now on leave for three months. How can one of us take over so we can keep adding people?",
        "I tried to sign in on a new laptop, it asked for a code sent to a phone number I cancelled years ago, and there's no other option on that screen. How do I get in?",
    ],
    "feedback": [
        "Just wanted to say the new update is {praise}.",
        "The redesigned menu is {gripe}, please bring back the old one.",
        "It would be great to have {wish}.",
        "{agent} was incredibly helpful {weekday}, please pass on my thanks.",
        "Love the product but {feature} feels {gripe} now.",
        "Any plans to add {wish}? It's the one thing stopping us switching fully.",
        "Honestly, this has been {praise} for our [small team|family business|studio].",
        "The new colour scheme is {gripe} on a big monitor.",
        "Suggestion: let us choose which columns show up on the main screen.",
        "{agent} was rude and didn't solve anything. Not impressed.",
        "I've recommended you to [three|a few|all my] friends already, keep it up!",
        "Please consider {wish}, I'd happily pay a bit more for it.",  # border: billing
        "Your onboarding emails are too frequent, one a week would be plenty.",
        "Packaging was lovely, felt like opening a present.",  # border: shipping
        "The help articles are outdated and show screenshots of the old design.",
        "Would love {wish} in the mobile app.",
        "Five stars from me, {praise}.",
        "The app is {praise}, but the web version feels {gripe}.",
        "Not a bug, just an idea: let us reorder items by dragging.",  # border: technical
        "Your survey popup appears every time I log in, it's annoying.",
        "Big fan of the product, small wish: {wish}.",
        "Too many clicks to do simple things now, the old flow was quicker.",
        "Thank you for fixing [the issue|my problem|that sync thing] so fast, really appreciated.",
        "Fonts in the new version are {gripe}, I have to squint.",
        "Please don't remove the classic view, a lot of us still use it.",
        "Survey answer: I'd give you [9|8|7]/10, only missing {wish}.",
        "I think a lot of people would use {wish} if you built it.",
        "The tone of your newsletter is great, fun to read.",
        "Kudos to the [team|devs|designers], the new version is {praise}.",
        "Wanted to share that {feature} is {praise} since the redesign.",
        "Love it overall but I really miss {wish}.",
        "Your chatbot is useless, I just want to talk to a person.",
        "the new icons are {gripe} imo",
        "Would be nice if the monthly summary had charts instead of tables.",
        "You should add {wish}, competitors already have it.",
        "Really happy with how quickly my question was answered.",
        "The price is fair for what you get, no complaints.",  # border: billing
        "Your app is {praise}, but notifications are way too noisy.",
        "Please make the text on receipts bigger, hard to read for older people.",
        "Idea for the roadmap: {wish}.",
        "Had an account with you for {days} years and this is the best version yet.",
        "Eco-friendly packaging would be a nice touch.",  # border: shipping
        "Not sure who decides these things, but the new home screen is {gripe}.",
        "Small thing, but the confirmation sounds are really loud.",
        "Your team clearly listens, the thing I asked for last year is now there!",
        "I've used a lot of tools like this over the years and yours is {praise}, though I do think the settings page could be organised a bit better for new people.",
        "Honest opinion from a long-time user: the last few updates added features nobody asked for while the basics, like {wish}, are still missing.",
    ],
}


def _fill(template: str, rng: random.Random) -> str:
    """Expand [a|b] choices and {slot}s; fillers may be lists or generators."""

    def repl(m: re.Match[str]) -> str:
        src = SLOTS[m.group(1)]
        return src(rng) if callable(src) else rng.choice(src)

    # [a|b|c] picks one paraphrase; then {slot}s (possibly nested in fillers) are filled.
    text = re.sub(r"\[([^\[\]]*)\]", lambda m: rng.choice(m.group(1).split("|")), template)
    for _ in range(3):
        text = re.sub(r"\{(\w+)\}", repl, text)
    return text


def _typo(text: str, rng: random.Random) -> str:
    """Introduce one realistic typo (swap, drop or double a letter) in a longer word."""
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
    if not idx:
        return text
    i = rng.choice(idx)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif kind == 1:
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


# First words that stay capitalised after "Hi," (proper nouns and "I").
_KEEP_CAPS = {"I", "FedEx", "Royal", "Google", "Apple", "FYI", *SLOTS["name"]}  # type: ignore[misc]


def _style(text: str, label: str, rng: random.Random) -> str:
    """Vary tone and surface form: opener/closer, casing, punctuation, occasional typos."""
    if label == "feedback":  # nobody opens praise with "URGENT:" or ends it with "Please help."
        opener = rng.choice(FEEDBACK_OPENERS)
        closer = _fill(rng.choice(FEEDBACK_CLOSERS), rng)
    else:
        opener = rng.choice(OPENERS)
        closer = _fill(rng.choice(CLOSERS), rng)
    if text and text[0].islower():
        # Quick lowercase messages: no greeting, and at most a terse sign-off.
        opener = ""
        closer = rng.choice(["", "", "thx", "pls help", "asap"]) if label != "feedback" else ""
    first = re.split(r"[\s,']", text, maxsplit=1)[0]
    if opener.endswith(",") and first not in _KEEP_CAPS and not first[1:2].isupper():
        text = text[0].lower() + text[1:]  # "Hi, my order..." reads more natural than "Hi, My"
    parts = [p for p in (opener, text, closer) if p]
    out = " ".join(parts)
    r = rng.random()
    if r < 0.06:
        out = out.lower()
    elif r < 0.09:
        out = out.rstrip(".") + "!!"
    elif r < 0.12:
        out = out.rstrip(".")
    if rng.random() < 0.08:
        out = _typo(out, rng)
    if rng.random() < 0.02:
        out = _typo(out, rng)
    return re.sub(r"\s+", " ", out).strip()


def generate(seed: int = SEED) -> list[tuple[str, str]]:
    """Return (text, label) rows, shuffled, with no duplicate texts (case-insensitive)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    for label, target in TARGETS.items():
        templates = TEMPLATES[label]
        # Cycle through templates in shuffled passes so every template is used evenly.
        order: list[str] = []
        got = 0
        attempts = 0
        while got < target:
            attempts += 1
            if attempts > target * 200:
                raise RuntimeError(f"could not make {target} unique rows for {label!r}")
            if not order:
                order = templates[:]
                rng.shuffle(order)
            template = order.pop()
            body = _fill(template, rng)
            if template.startswith("{"):
                body = body[0].upper() + body[1:]  # "{carrier} says..." -> "The courier says..."
            text = _style(body, label, rng)
            n_words = len(text.split())
            key = text.casefold()
            if not (MIN_WORDS <= n_words <= MAX_WORDS) or key in seen:
                continue
            seen.add(key)
            rows.append((text, label))
            got += 1
    rng.shuffle(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    rows = generate(args.seed)
    with args.out.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
