import { Duration } from "effect"

/** Telegram Stars. Digital goods are paid in Stars only, with an empty provider token. */
export const CURRENCY = "XTR"

/** How long an invoice can be paid; pre-checkout refuses it afterwards. */
export const ORDER_TTL = Duration.minutes(30)

export interface Product {
  readonly id: string
  readonly title: string
  readonly description: string
  /** Credits added to the balance when paid. */
  readonly credits: number
  /** Price in Stars (XTR has no fractional unit). */
  readonly amount: number
}

// Defined in code: a price change is a deploy, and orders keep the price they were issued at,
// so an invoice sent before the change is still honoured at its own price.
export const PRODUCTS: ReadonlyArray<Product> = [
  { id: "credits_100", title: "100 credits", description: "100 credits for steadfast.", credits: 100, amount: 50 },
  { id: "credits_500", title: "500 credits", description: "500 credits for steadfast: the better deal.", credits: 500, amount: 200 }
]

export const findProduct = (id: string): Product | undefined => PRODUCTS.find((product) => product.id === id.toLowerCase())

export const describeProduct = (product: Product): string => `${product.title} for ${product.amount} ⭐`

/** Callback data of the /buy keyboard's buttons (at most 64 bytes). */
export const BUY_CALLBACK_PREFIX = "buy:"
